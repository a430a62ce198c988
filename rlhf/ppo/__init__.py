"""The Ray roles and plumbing of ``rlhf train ppo`` (the controller loop itself is ``rlhf/stages/ppo.py``).

* :mod:`rlhf.ppo.containers`: ``TokenBatch``, ``Rollout``, ``Batch`` (typed tensors, shapes documented).
* :mod:`rlhf.ppo.learner`: ``PolicyLearner``, ``CriticLearner`` (one DeepSpeed rank each).
* :mod:`rlhf.ppo.deepspeed_engine`: process group, ZeRO config, torch AdamW, checkpoints of a learner rank.
* :mod:`rlhf.ppo.roles`: ``RolloutWorker``, ``ReferenceActor``, ``RewardActor``.
* :mod:`rlhf.ppo.modeling`: per-token values, critic initialisation, weight export for sync.
* :mod:`rlhf.ppo.weight_sync`: the learner-to-rollout sync group and the post-sync probe check.
* :mod:`rlhf.ppo.launcher`: resources config, placement group, actors (wiring only).
* :mod:`rlhf.ppo.checkpoint`: controller state, checkpoint folders, metrics truncation at resume.

Importing this package imports neither Ray nor DeepSpeed; the modules import them where they are used.
"""
