"""The Ray roles of policy optimisation (the controller loop itself is ``rlhf/stages/ppo.py``).

* :mod:`.launcher`: placement group and actors from ``resources`` (wiring only).
* :mod:`.learner`: ``PolicyLearner``, ``CriticLearner`` (one DeepSpeed rank each).
* :mod:`.inference`: ``RolloutWorker``, ``ReferenceActor``, ``RewardActor``.
* :mod:`.weight_sync`: the learner-to-rollout sync group and the post-sync probe check.
* :mod:`.checkpoint`: controller state, checkpoint folders, metrics truncation at resume.

Importing this package imports neither Ray nor DeepSpeed; the modules import them where they are used.
"""
