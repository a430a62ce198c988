"""The RL math of PPO and its critic-free variants, as pure functions that import only torch.

Token tensors are ``[B, T]`` (responses x response tokens) with a ``mask`` ``[B, T]`` that is 1 on valid
response tokens and 0 on padding and after EOS. See ``docs/rl-math.md`` for every formula and its source.

* :mod:`rlhf.rl.masking`: masked reductions, whole-batch whitening, reward placement, truncation.
* :mod:`rlhf.rl.kl`: k1/k2/k3 KL estimators and the fixed/adaptive KL controllers.
* :mod:`rlhf.rl.advantages`: GAE, GRPO, RLOO, REINFORCE++.
* :mod:`rlhf.rl.losses`: clipped policy loss, truncated importance weights, value loss, KL loss, entropy,
  loss aggregation.
"""

from rlhf.rl.advantages import gae, group_mean_std, grpo_advantages, reinforce_pp_advantages, rloo_advantages
from rlhf.rl.kl import AdaptiveKLController, FixedKLController, KLController, KLKind, kl_estimate
from rlhf.rl.losses import (
    AggregationMode,
    PolicyLossStats,
    ValueLossStats,
    aggregate,
    critic_warmup_active,
    entropy_from_logits,
    kl_loss,
    policy_loss,
    truncated_importance_weights,
    value_loss,
)
from rlhf.rl.masking import (
    TruncationMode,
    TruncationResult,
    apply_truncation,
    compute_token_rewards,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    place_reward_on_last_token,
)

__all__ = [
    "AdaptiveKLController",
    "AggregationMode",
    "FixedKLController",
    "KLController",
    "KLKind",
    "PolicyLossStats",
    "TruncationMode",
    "TruncationResult",
    "ValueLossStats",
    "aggregate",
    "apply_truncation",
    "compute_token_rewards",
    "critic_warmup_active",
    "entropy_from_logits",
    "gae",
    "group_mean_std",
    "grpo_advantages",
    "kl_estimate",
    "kl_loss",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "place_reward_on_last_token",
    "policy_loss",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "truncated_importance_weights",
    "value_loss",
]
