"""Training plumbing shared by the stages: the HF Trainer integration (:mod:`.hf`: DeepSpeed settings,
checkpoints, saving), TRL trainers as Ray Train workers (:mod:`.ray_train`), and the DeepSpeed engine of a
PPO learner rank (:mod:`.deepspeed_engine`, with value heads and weight export in :mod:`.modeling`).

Importing this package imports neither Ray nor DeepSpeed; the modules import them where they are used.
"""
