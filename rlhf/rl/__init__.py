"""The RL math of PPO and its critic-free variants, as pure functions that import only torch.

Token tensors are ``[B, T]`` (responses x response tokens) with a ``mask`` ``[B, T]`` that is 1 on valid
response tokens and 0 on padding and after EOS. See ``docs/rl-math.md`` for every formula and its source.

* :mod:`rlhf.rl.types`: the option names (``Literal`` types; no torch, so configs import them cheaply).
* :mod:`rlhf.rl.masking`: masked reductions, whole-batch whitening, reward normalisation and placement,
  truncation.
* :mod:`rlhf.rl.kl`: k1/k2/k3 KL estimators and the fixed/adaptive KL controllers.
* :mod:`rlhf.rl.advantages`: GAE, GRPO, RLOO, REINFORCE++, and :func:`compute_advantages` over them.
* :mod:`rlhf.rl.losses`: clipped policy loss, truncated importance weights, value loss, KL loss, entropy,
  loss aggregation, and :func:`ppo_objective`, the policy learner's whole loss.

Importing this package imports no torch: the names below load their module on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf.rl.types import Advantage, AggregationMode, KLKind, KLPlacement, TruncationMode
from rlhf.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from rlhf.rl.advantages import (
        compute_advantages,
        gae,
        group_mean_std,
        grpo_advantages,
        reinforce_pp_advantages,
        rloo_advantages,
    )
    from rlhf.rl.kl import AdaptiveKLController, FixedKLController, KLController, kl_estimate
    from rlhf.rl.losses import (
        ObjectiveStats,
        PolicyLossSettings,
        PolicyLossStats,
        ValueLossStats,
        aggregate,
        critic_warmup_active,
        entropy_from_logits,
        kl_loss,
        policy_loss,
        ppo_objective,
        truncated_importance_weights,
        value_loss,
    )
    from rlhf.rl.masking import (
        TruncationResult,
        apply_truncation,
        compute_token_rewards,
        masked_mean,
        masked_sum,
        masked_var,
        masked_whiten,
        normalise_rewards,
        place_reward_on_last_token,
    )

_MODULES: dict[str, tuple[str, ...]] = {
    "advantages": ("compute_advantages", "gae", "group_mean_std", "grpo_advantages", "reinforce_pp_advantages",
        "rloo_advantages"),
    "kl": ("AdaptiveKLController", "FixedKLController", "KLController", "kl_estimate"),
    "losses": ("ObjectiveStats", "PolicyLossSettings", "PolicyLossStats", "ValueLossStats", "aggregate",
        "critic_warmup_active", "entropy_from_logits", "kl_loss", "policy_loss", "ppo_objective",
        "truncated_importance_weights", "value_loss"),
    "masking": ("TruncationResult", "apply_truncation", "compute_token_rewards", "masked_mean", "masked_sum",
        "masked_var", "masked_whiten", "normalise_rewards", "place_reward_on_last_token"),
}

__all__ = [
    "AdaptiveKLController",
    "Advantage",
    "AggregationMode",
    "FixedKLController",
    "KLController",
    "KLKind",
    "KLPlacement",
    "ObjectiveStats",
    "PolicyLossSettings",
    "PolicyLossStats",
    "TruncationMode",
    "TruncationResult",
    "ValueLossStats",
    "aggregate",
    "apply_truncation",
    "compute_advantages",
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
    "normalise_rewards",
    "place_reward_on_last_token",
    "policy_loss",
    "ppo_objective",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "truncated_importance_weights",
    "value_loss",
]


__getattr__, __dir__ = lazy_attributes(globals(), _MODULES)
