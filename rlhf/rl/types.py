"""The names of the RL options, as ``Literal`` types that import no torch (configs read them at load time)."""

from __future__ import annotations

from typing import Literal

__all__ = ["Advantage", "AggregationMode", "KLKind", "KLPlacement", "TruncationMode"]

# Advantage estimator: GAE with a critic, or the critic-free GRPO, RLOO and REINFORCE++ (rlhf.rl.advantages).
Advantage = Literal["gae", "grpo", "rloo", "reinforce_pp"]
# How a [B, T] loss matrix is reduced to a scalar (rlhf.rl.losses.aggregate).
AggregationMode = Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"]
# Per-token KL estimator (rlhf.rl.kl.kl_estimate).
KLKind = Literal["k1", "k2", "k3"]
# Where the KL penalty goes: in the token rewards (PPO) or in the loss (GRPO).
KLPlacement = Literal["reward", "loss"]
# Replies cut by the length limit (rlhf.rl.masking.apply_truncation).
TruncationMode = Literal["none", "penalty", "mask"]
