"""Per-token KL estimators and the KL-coefficient controllers.

Estimators (Schulman, "Approximating KL Divergence", 2020, http://joschu.net/blog/kl-approx.html).
Tokens are sampled from the policy ``pi``; with ``log_ratio = logp - ref_logp = log(pi / pi_ref)``:

* ``k1 = log_ratio``: unbiased for KL(pi || pi_ref), high variance, can be negative per token.
* ``k2 = log_ratio**2 / 2``: biased (low bias when the policies are close), always >= 0.
* ``k3 = exp(-log_ratio) - 1 + log_ratio = exp(ref_logp - logp) - (ref_logp - logp) - 1``: unbiased and
  always >= 0 (since ``e^x >= 1 + x``), lower variance than k1.

Used as a REWARD (classic PPO, REINFORCE++) the value matters. Used as a LOSS (GRPO style), only its
gradient does: in expectation over samples from ``pi``, the gradient of k1 is 0, that of k2 is the
gradient of KL(pi || pi_ref), and that of k3 is the gradient of the forward KL(pi_ref || pi)
(Tang and Munos 2025, "On a few pitfalls in KL divergence gradient estimation for RL").

Controllers: ``FixedKLController`` keeps ``value`` constant; ``AdaptiveKLController`` is the proportional
controller of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"):
``e = clip(KL / target - 1, -0.2, 0.2)``, ``beta <- beta * (1 + e * n_steps / horizon)``. Both save and
restore their state exactly with ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from rlhf.rl.types import KLKind

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "KLKind",
    "kl_estimate",
]


# exp(20) is about 4.9e8: finite in fp32 and bf16. A log-ratio beyond +-20 means the two policies disagree
# by a factor above 10^8 on that token; the estimate is already huge, and clamping keeps it finite.
DEFAULT_LOG_RATIO_CLAMP = 20.0


def kl_estimate(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    kind: KLKind,
    log_ratio_clamp: float | None = DEFAULT_LOG_RATIO_CLAMP,
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the log-probs of the sampled tokens.

    Shapes: ``logp``, ``ref_logp`` ``[B, T]`` (any equal shapes) -> same shape, computed in at least fp32.
    No mask is applied: multiply by the mask or aggregate with one (see :func:`rlhf.rl.losses.kl_loss`).

    For ``k3`` the log-ratio is clamped to ``[-log_ratio_clamp, log_ratio_clamp]`` before ``exp`` so a
    single far-off token cannot produce ``inf`` (verl clamps the same way); inside the clamp range the
    value is exact. k1 and k2 have no ``exp`` and are never clamped. ``log_ratio_clamp=None`` disables it.
    Source: Schulman 2020, "Approximating KL Divergence".
    """
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} must have the same shape")
    dtype = torch.promote_types(logp.dtype, torch.float32)
    log_ratio = logp.to(dtype) - ref_logp.to(dtype)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "k3":
        if log_ratio_clamp is not None:
            if log_ratio_clamp <= 0:
                raise ValueError(f"log_ratio_clamp must be > 0 or None, got {log_ratio_clamp}")
            log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
        return torch.exp(-log_ratio) - 1.0 + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; use one of 'k1', 'k2', 'k3'")


class KLController(Protocol):
    """What a trainer needs from a KL-coefficient controller."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _check_update_args(current_kl: float, n_steps: int) -> None:
    if not math.isfinite(current_kl):
        raise ValueError(f"current_kl is {current_kl}; the KL estimate diverged, check the rollout log-probs")
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0 (samples or steps since the last update), got {n_steps}")


def _check_state(state: dict[str, Any], kind: str, keys: set[str]) -> None:
    if state.get("type") != kind:
        raise ValueError(
            f"KL controller state is for a {state.get('type')!r} controller, not {kind!r}; "
            f"resume with the KL controller the run was started with"
        )
    expected = keys | {"type"}
    if set(state) != expected:
        raise ValueError(f"KL controller state has keys {sorted(state)}, expected {sorted(expected)}")


@dataclass
class FixedKLController:
    """A constant KL coefficient ``value`` (beta)."""

    value: float

    def __post_init__(self) -> None:
        if not (self.value >= 0 and math.isfinite(self.value)):
            raise ValueError(f"KL coefficient must be a finite number >= 0, got {self.value}")

    def update(self, current_kl: float, n_steps: int) -> None:
        """No change; arguments are checked so both controllers fail the same way on a bad KL."""
        _check_update_args(current_kl, n_steps)

    def state_dict(self) -> dict[str, Any]:
        """The exact state, for checkpoints."""
        return {"type": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; raises when the state is for another controller."""
        _check_state(state, "fixed", {"value"})
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """Proportional controller that steers the measured KL towards ``target`` (Ziegler et al. 2019).

    ``value`` is the current coefficient (initialised to the starting beta), ``target`` the KL aimed at
    (nats per sequence, measured the same way as the ``current_kl`` passed to :meth:`update`), and
    ``horizon`` the number of samples over which a full-size (20 %) correction is applied.
    """

    value: float
    target: float
    horizon: int

    def __post_init__(self) -> None:
        if not (self.value > 0 and math.isfinite(self.value)):
            raise ValueError(
                f"adaptive KL needs an initial coefficient > 0, got {self.value}; "
                f"a coefficient of 0 can never grow (updates are multiplicative)"
            )
        if not (self.target > 0 and math.isfinite(self.target)):
            raise ValueError(f"KL target must be a finite number > 0, got {self.target}")
        if self.horizon <= 0:
            raise ValueError(f"KL horizon must be > 0, got {self.horizon}")

    def update(self, current_kl: float, n_steps: int) -> None:
        """``value *= 1 + clip(current_kl / target - 1, -0.2, 0.2) * n_steps / horizon``."""
        _check_update_args(current_kl, n_steps)
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        """The exact state, for checkpoints."""
        return {"type": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`.

        Raises when the saved ``target`` or ``horizon`` differs from this controller's: resuming under a
        different controller setting would silently change the run.
        """
        _check_state(state, "adaptive", {"value", "target", "horizon"})
        for key in ("target", "horizon"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"checkpoint KL controller has {key}={state[key]} but this run is configured with "
                    f"{key}={getattr(self, key)}; resume with the original setting"
                )
        self.value = float(state["value"])
