"""The Ray roles of policy optimisation (the controller loop itself is ``rlhf/stages/ppo.py``).

* :mod:`.launcher`: placement group and actors from ``resources`` (wiring only).
* :mod:`.learner`: ``PolicyLearner``, ``CriticLearner`` (one DeepSpeed rank each, built from a ``LearnerSpec``).
* :mod:`.inference`: ``RolloutWorker``, ``ReferenceActor``, ``RewardActor``, each built from its frozen spec
  (``RolloutSpec``, ``ReferenceSpec``, ``RewardSpec``).
* :mod:`.group`: ``RoleSpecs``, starting every role at once, and the calls the controller makes on several
  actors (generate, train a mini-batch, sync, checkpoint).
* :mod:`.weight_sync`: the learner-to-rollout sync group and the post-sync probe check.
* :mod:`.checkpoint`: controller state, checkpoint folders, metrics truncation at resume.

Importing this package imports neither Ray nor DeepSpeed; the modules import them where they are used.
"""
