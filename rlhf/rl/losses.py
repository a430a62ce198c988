"""Losses of PPO and its critic-free variants, and how token losses are reduced to a scalar.

* :func:`policy_loss`: the clipped surrogate of PPO (Schulman et al. 2017, arXiv:1707.06347, eq. 7)
  ``L_t = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - clip_low, 1 + clip_high))`` with
  ``rho_t = exp(logp_t - old_logp_t)``. ``clip_high > clip_low`` is DAPO's clip-higher (Yu et al. 2025,
  arXiv:2503.14476). ``dual_clip = c`` (> 1) also bounds the loss of negative-advantage tokens by
  ``c * |A_t|`` (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL", arXiv:1912.09729).
* :func:`value_loss`: ``0.5 * max((V - R)^2, (V_clip - R)^2)`` with ``V_clip = V_old + clip(V - V_old, +-c)``
  (the clipped value loss of OpenAI baselines' PPO2 and of ``lm-human-preferences``, Ziegler et al. 2019).
* :func:`truncated_importance_weights`: the per-token correction ``min(pi_learner / pi_rollout, cap)`` for
  tokens sampled by a rollout engine whose numerics differ from the learner's (vLLM vs DeepSpeed): truncated
  importance sampling (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
  Training", https://fengyao.notion.site/off-policy-rl). :func:`policy_loss` multiplies each token's loss by it.
* :func:`kl_loss`: a KL estimator from :mod:`rlhf.rl.kl` aggregated as a loss (GRPO, Shao et al. 2024).
* :func:`entropy_from_logits`: per-token entropy, computed in row chunks so no full-size softmax
  copy of ``[B, T, V]`` is made at once, each row shifted by its maximum first (stable for large logits).
* :func:`ppo_objective`: the whole per-micro-batch objective of the policy learner, composed of the above:
  ``policy_loss (x TIS weights) + kl_coef * kl_loss (KL in the loss) - entropy_coef * entropy``.

Aggregation (:func:`aggregate`) reduces a ``[B, T]`` loss matrix to a scalar. ``token_mean`` divides the
masked sum by a token count; when the batch is split over data-parallel ranks or gradient-accumulation
micro-batches, pass the number of valid tokens of the WHOLE optimiser batch as ``global_token_count`` and
SUM the shard losses (no further averaging): the summed loss and its gradient then equal those of the
unsplit batch, however the tokens fall into shards. ``global_seq_count`` does the same for the two
sequence-level modes.

Padding: every function here ignores what its inputs hold where the mask is 0 (NaN and inf included):
they are zeroed with :func:`rlhf.rl.masking.zero_masked` before any arithmetic, so neither the loss, the
statistics nor the gradient of a valid token depends on them, and the gradient there is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.rl.kl import kl_estimate
from rlhf.rl.masking import check_token_shapes, masked_mean, masked_sum, zero_masked
from rlhf.rl.types import AggregationMode, KLKind

__all__ = [
    "AggregationMode",
    "ObjectiveStats",
    "PolicyLossSettings",
    "PolicyLossStats",
    "ValueLossStats",
    "aggregate",
    "critic_warmup_active",
    "entropy_from_logits",
    "kl_loss",
    "policy_loss",
    "ppo_objective",
    "truncated_importance_weights",
    "value_loss",
]

# exp(20) ~ 4.9e8: a ratio beyond this is clipped anyway unless the advantage sign lets it through.
_LOG_RATIO_CLAMP = 20.0


def _check_global_count(name: str, value: int, local: int) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if value < local:
        raise ValueError(
            f"{name}={value} is smaller than this shard's own count {local}; pass the count over the "
            f"whole optimiser batch (all ranks and micro-batches), not a per-shard count"
        )


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: AggregationMode = "token_mean",
    global_token_count: int | None = None,
    global_seq_count: int | None = None,
) -> torch.Tensor:
    """Reduce a token loss matrix to a scalar.

    * ``token_mean``: ``sum(L * mask) / N`` with ``N = global_token_count`` or this batch's valid tokens.
    * ``seq_mean_token_sum``: ``sum_i (sum_t L_it * mask_it) / S``.
    * ``seq_mean_token_mean``: ``sum_i mean_t(L_it | mask_it) / S``.

    ``S`` is ``global_seq_count`` or the number of rows with at least one valid token (rows masked out
    entirely, e.g. by truncation masking, do not dilute the mean). The global counts make the SUM of
    shard losses equal the full-batch loss; they must be >= the shard's own count (checking that reads
    the local count from the device once).
    Shapes: ``loss_mat``, ``mask`` ``[B, T]`` -> scalar. An empty mask gives 0 (with zero gradient).
    Source: verl ``agg_loss`` modes; token-level normalisation as in DAPO (Yu et al. 2025, sec. 3.3).
    """
    check_token_shapes(mask, loss_mat=loss_mat)
    fmask = mask.to(loss_mat.dtype)
    if mode == "token_mean":
        if global_seq_count is not None:
            raise ValueError("global_seq_count applies to the seq_mean_* modes; use global_token_count")
        total = masked_sum(loss_mat, fmask)
        if global_token_count is None:
            return total / fmask.sum().clamp(min=1)
        _check_global_count("global_token_count", global_token_count, int(fmask.sum().item()))
        return total / global_token_count
    if mode not in ("seq_mean_token_sum", "seq_mean_token_mean"):
        raise ValueError(
            f"unknown aggregation {mode!r}; use 'token_mean', 'seq_mean_token_sum' or 'seq_mean_token_mean'"
        )
    if global_token_count is not None:
        raise ValueError(f"global_token_count applies to token_mean only; for {mode} use global_seq_count")
    if mode == "seq_mean_token_sum":
        per_seq = masked_sum(loss_mat, fmask, dim=1)
    else:
        per_seq = masked_mean(loss_mat, fmask, dim=1)
    n_seq = (fmask.sum(dim=1) > 0).sum()
    if global_seq_count is None:
        return per_seq.sum() / n_seq.clamp(min=1)
    _check_global_count("global_seq_count", global_seq_count, int(n_seq.item()))
    return per_seq.sum() / global_seq_count


@dataclass(frozen=True)
class PolicyLossStats:
    """Diagnostics of one :func:`policy_loss` call, as detached 0-dim tensors (no device sync).

    ``clip_fraction``: valid tokens where the ratio clip is active (their gradient is 0);
    ``dual_clip_fraction``: valid tokens where the dual-clip bound is active;
    ``approx_kl``: mean of ``(rho - 1) - log rho``, Schulman's k3 estimate of KL(old || new), >= 0;
    ``ratio_mean`` / ``ratio_max``: of ``rho`` over valid tokens.
    """

    clip_fraction: torch.Tensor
    dual_clip_fraction: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor
    ratio_max: torch.Tensor

    def to_dict(self) -> dict[str, float]:
        """Plain floats for logging (this syncs with the device)."""
        return {name: float(getattr(self, name).item()) for name in self.__dataclass_fields__}


def _check_clip(clip_low: float, clip_high: float, dual_clip: float | None) -> None:
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1) so that 1 - clip_low > 0, got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (Ye et al. 2020 use 3.0) or None to disable, got {dual_clip}")


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: AggregationMode = "token_mean",
    global_token_count: int | None = None,
    global_seq_count: int | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """PPO clipped surrogate loss (to minimise), with optional clip-higher and dual-clip.

    Per token: ``L = max(-A * rho, -A * clip(rho, 1 - clip_low, 1 + clip_high))``; with ``dual_clip = c``,
    tokens with ``A < 0`` use ``min(L, -A * c)``. The log-ratio is clamped to +-20 before ``exp``.
    ``is_weights`` (``[B, T]``, constants, e.g. from :func:`truncated_importance_weights`) multiply each
    token's ``L`` before aggregation.
    Shapes: ``logp`` (current policy, with grad), ``old_logp`` (behaviour policy), ``advantages``, ``mask``:
    all ``[B, T]``. Returns ``(loss, stats)``; the loss is aggregated with :func:`aggregate`.
    Sources: Schulman et al. 2017 eq. 7; Yu et al. 2025 (DAPO) clip-higher; Ye et al. 2020 dual-clip.
    """
    check_token_shapes(mask, logp=logp, old_logp=old_logp, advantages=advantages,
                       **({"is_weights": is_weights} if is_weights is not None else {}))
    _check_clip(clip_low, clip_high, dual_clip)
    dtype = torch.promote_types(logp.dtype, torch.float32)
    adv = zero_masked(advantages.detach().to(dtype), mask)
    log_ratio = zero_masked(logp.to(dtype), mask) - zero_masked(old_logp.detach().to(dtype), mask)
    log_ratio = log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    dual_active = torch.zeros_like(adv, dtype=torch.bool)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual_active = (adv < 0) & (loss_mat > bound)
        loss_mat = torch.where(dual_active, bound, loss_mat)
    if is_weights is not None:
        loss_mat = loss_mat * zero_masked(is_weights.detach().to(dtype), mask)
    loss = aggregate(loss_mat, mask, aggregation, global_token_count, global_seq_count)

    with torch.no_grad():
        fmask = mask.to(dtype)
        stats = PolicyLossStats(
            clip_fraction=masked_mean((clipped > unclipped).to(dtype), fmask),
            dual_clip_fraction=masked_mean(dual_active.to(dtype), fmask),
            approx_kl=masked_mean(ratio - 1.0 - log_ratio, fmask),
            ratio_mean=masked_mean(ratio, fmask),
            ratio_max=torch.where(mask.to(torch.bool), ratio, torch.zeros_like(ratio)).max(),  # ratio > 0
        )
    return loss, stats


@torch.no_grad()
def truncated_importance_weights(
    old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, cap: float = 2.0
) -> torch.Tensor:
    """Truncated importance weights ``min(exp(old_logp - rollout_logp), cap)``, ``[B, T]``, 0 on padding.

    ``old_logp``: the learner's log-probs of the sampled tokens before the update (the PPO behaviour
    policy); ``rollout_logp``: the rollout engine's log-probs of the same tokens when it sampled them. The
    tokens were drawn from the engine, so the learner-side PPO objective is off-policy by the ratio of the
    two; the cap bounds the variance (Yao et al. 2025 use 2). The log-ratio is clamped to +-20 before ``exp``.
    """
    check_token_shapes(mask, old_logp=old_logp, rollout_logp=rollout_logp)
    if not cap >= 1.0:
        raise ValueError(f"the importance-weight cap must be >= 1 (Yao et al. 2025 use 2), got {cap}")
    dtype = torch.promote_types(old_logp.dtype, torch.float32)
    log_ratio = zero_masked(old_logp.to(dtype), mask) - zero_masked(rollout_logp.to(dtype), mask)
    log_ratio = log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    return torch.exp(log_ratio).clamp(max=cap) * mask.to(dtype)


@dataclass(frozen=True)
class ValueLossStats:
    """Diagnostics of one :func:`value_loss` call, as detached 0-dim tensors.

    ``clip_fraction``: valid tokens where the clip is active: it moved the value and left it strictly
    farther from the return than the unclipped one (their gradient is 0). Rounding ties do not count;
    see :func:`value_loss`.
    ``value_error``: mean unclipped squared error ``(V - R)^2`` over valid tokens.
    """

    clip_fraction: torch.Tensor
    value_error: torch.Tensor

    def to_dict(self) -> dict[str, float]:
        """Plain floats for logging (this syncs with the device)."""
        return {name: float(getattr(self, name).item()) for name in self.__dataclass_fields__}


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = None,
    aggregation: AggregationMode = "token_mean",
    global_token_count: int | None = None,
    global_seq_count: int | None = None,
) -> tuple[torch.Tensor, ValueLossStats]:
    """Critic regression loss ``0.5 * (V - R)^2``, optionally clipped around the rollout-time values.

    With ``clip = c``: ``0.5 * max((V - R)^2, (V_clip - R)^2)``, ``V_clip = V_old + clip(V - V_old, -c, c)``:
    the critic cannot reduce its loss by moving more than ``c`` from ``V_old`` in one rollout batch. The
    clipped branch is taken (and counted in ``clip_fraction``) only where the clip moved the value
    (``|V - V_old| > c``) and ``|V_clip - R|`` exceeds ``|V - R|`` by more than a few roundings of the
    operands' magnitude. Elsewhere the two errors are equal up to rounding (``V_old + (V - V_old)`` can
    land an ulp away from ``V``; ``V`` and ``V_clip`` can be equidistant from ``R``), and the unclipped
    branch is taken, so the gradient flows and the statistic agrees with it.
    Shapes: ``values`` (current critic, with grad), ``old_values`` (critic at rollout time), ``returns``
    (GAE targets), ``mask``: all ``[B, T]``. Returns ``(loss, stats)``.
    Source: OpenAI baselines PPO2 value clipping; Ziegler et al. 2019 (``lm-human-preferences``).
    """
    check_token_shapes(mask, values=values, old_values=old_values, returns=returns)
    if clip is not None and clip <= 0:
        raise ValueError(f"value clip must be > 0 or None to disable, got {clip}")
    dtype = torch.promote_types(values.dtype, torch.float32)
    v = zero_masked(values.to(dtype), mask)
    target = zero_masked(returns.detach().to(dtype), mask)
    err = (v - target).square()
    if clip is None:
        loss_mat = err
        clipped_more = torch.zeros_like(err, dtype=torch.bool)
    else:
        v_old = zero_masked(old_values.detach().to(dtype), mask)
        v_clipped = v_old + (v - v_old).clamp(-clip, clip)
        err_clipped = (v_clipped - target).square()
        with torch.no_grad():
            # Each distance is a few roundings away from its exact value, each within one ulp of the
            # largest operand: a margin of 16 such ulps separates a real clip from a rounding tie.
            scale = torch.maximum(torch.maximum(v.abs(), v_old.abs()), target.abs()).clamp(min=clip)
            margin = 16 * torch.finfo(dtype).eps * scale
            moved = (v - v_old).abs() > clip
            farther = (v_clipped - target).abs() > (v - target).abs() + margin
            clipped_more = moved & farther
        loss_mat = torch.where(clipped_more, err_clipped, err)
    loss = 0.5 * aggregate(loss_mat, mask, aggregation, global_token_count, global_seq_count)
    with torch.no_grad():
        fmask = mask.to(dtype)
        stats = ValueLossStats(
            clip_fraction=masked_mean(clipped_more.to(dtype), fmask),
            value_error=masked_mean(err, fmask),
        )
    return loss, stats


def kl_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    kind: KLKind = "k3",
    aggregation: AggregationMode = "token_mean",
    global_token_count: int | None = None,
    global_seq_count: int | None = None,
) -> torch.Tensor:
    """KL-to-reference penalty as a loss term (KL-in-loss, GRPO style; the trainer multiplies by beta).

    Shapes: ``logp`` (current policy, with grad), ``ref_logp``, ``mask``: ``[B, T]`` -> scalar.
    GRPO uses ``k3`` (Shao et al. 2024 eq. 4); see :mod:`rlhf.rl.kl` for what each estimator's gradient
    optimises.
    """
    check_token_shapes(mask, logp=logp, ref_logp=ref_logp)
    kl = kl_estimate(zero_masked(logp, mask), zero_masked(ref_logp.detach(), mask), kind)
    return aggregate(kl, mask, aggregation, global_token_count, global_seq_count)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor, chunk_size: int = 512) -> torch.Tensor:
    """Per-token entropy ``H = logsumexp(z) - sum_v softmax(z)_v * z_v`` of the policy's distribution.

    Each row is shifted by its maximum first (``H`` does not change), so large logits lose no precision to
    cancellation between the two terms. Logits of ``-inf`` (banned tokens) add 0.
    Only valid positions are computed, ``chunk_size`` rows at a time in at least fp32, so the extra memory is
    about ``chunk_size * V`` floats per chunk rather than a full softmax copy of the logits (with grad,
    autograd keeps each chunk's softmax for the backward pass).
    Shapes: ``logits`` ``[B, T, V]``, ``mask`` ``[B, T]`` -> ``[B, T]`` (fp32 or wider), zero where masked.
    Aggregate with :func:`aggregate` for an entropy bonus or an ``train/entropy`` metric.
    """
    if logits.dim() != 3 or logits.shape[:2] != mask.shape:
        raise ValueError(
            f"logits must be [B, T, V] matching mask [B, T], got {tuple(logits.shape)} and {tuple(mask.shape)}"
        )
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    flat = logits.reshape(-1, logits.shape[-1])
    rows = mask.reshape(-1).to(torch.bool).nonzero().flatten()
    pieces = []
    for start in range(0, rows.numel(), chunk_size):
        z = flat.index_select(0, rows[start : start + chunk_size]).to(dtype)
        # H is the same for z and z - max(z). Without the shift, logsumexp(z) and sum p z are both about
        # max(z) and their difference cancels: at logits near 1e4, fp32 keeps no correct digit of H.
        row_max = z.detach().amax(dim=-1, keepdim=True)
        z = z - torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        lse = torch.logsumexp(z, dim=-1)
        probs = torch.exp(z - lse.unsqueeze(-1))
        # Logits of -inf (banned tokens) have probability 0; keep 0 * -inf from turning into NaN.
        z_finite = torch.where(torch.isneginf(z), torch.zeros_like(z), z)
        pieces.append(lse - (probs * z_finite).sum(dim=-1))
    out = torch.zeros(flat.shape[0], dtype=dtype, device=logits.device)
    if pieces:
        out = out.index_put((rows,), torch.cat(pieces))
    return out.reshape(mask.shape)


@dataclass(frozen=True)
class PolicyLossSettings:
    """How the policy objective is formed (:func:`ppo_objective`), fixed for a run.

    ``temperature`` is the one the learner divides the logits by before the log-softmax, the sampling
    temperature of the rollout (so the ratio compares the distribution the tokens were drawn from).
    """

    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None
    aggregation: AggregationMode = "token_mean"
    entropy_coef: float = 0.0
    kl_in_loss: bool = False
    kl_estimator: KLKind = "k3"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        _check_clip(self.clip_low, self.clip_high, self.dual_clip)
        if self.entropy_coef < 0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if not self.temperature > 0:
            raise ValueError(f"the log-prob temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class ObjectiveStats:
    """The terms of one :func:`ppo_objective` call, as detached 0-dim tensors (already aggregated, so the
    SUM over shards of the same optimiser batch is the batch's value), and the policy-loss diagnostics."""

    policy_loss: torch.Tensor
    kl_loss: torch.Tensor | None  # None unless the KL is in the loss
    entropy: torch.Tensor
    policy: PolicyLossStats


def ppo_objective(
    logp: torch.Tensor,
    logits: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    settings: PolicyLossSettings,
    kl_coef: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
    global_token_count: int | None = None,
    global_seq_count: int | None = None,
) -> tuple[torch.Tensor, ObjectiveStats]:
    """The policy learner's loss of one micro-batch (to minimise) and its terms.

    ``loss = policy_loss - entropy_coef * H``, plus ``kl_coef * kl_loss`` when ``settings.kl_in_loss``:

    * :func:`policy_loss`: the clipped surrogate (clip-higher, dual-clip), each token's term multiplied by
      ``is_weights`` when given (truncated importance sampling; the KL and entropy terms are not weighted);
    * :func:`kl_loss`: ``settings.kl_estimator`` of ``logp`` against ``ref_logp`` (GRPO, Shao et al. 2024);
    * the entropy :func:`entropy_from_logits` of the distribution the log-probs come from (the bonus of
      Mnih et al. 2016 / PPO eq. 9); it is computed without gradient when ``entropy_coef`` is 0, for the
      ``entropy`` statistic only.

    Every term is aggregated with ``settings.aggregation`` and the same global counts (see
    :func:`aggregate`), so summing this loss over the shards of an optimiser batch gives that batch's loss.
    Shapes: ``logp`` (current policy, with grad), ``old_logp``, ``advantages``, ``mask``, ``ref_logp``,
    ``is_weights``: ``[B, T]``; ``logits`` ``[B, T, V]`` (the temperature-scaled logits ``logp`` was read from).
    """
    counts = {"global_token_count": global_token_count, "global_seq_count": global_seq_count}
    loss, pg_stats = policy_loss(logp, old_logp, advantages, mask, settings.clip_low, settings.clip_high,
                                 settings.dual_clip, settings.aggregation, **counts, is_weights=is_weights)
    policy_term = loss.detach()
    kl_term = None
    if settings.kl_in_loss:
        if ref_logp is None:
            raise ValueError("the KL is in the loss (kl_in_loss) but no reference log-probs were given")
        kl_value = kl_loss(logp, ref_logp, mask, settings.kl_estimator, settings.aggregation, **counts)
        loss = loss + kl_coef * kl_value
        kl_term = kl_value.detach()
    with torch.set_grad_enabled(settings.entropy_coef > 0 and torch.is_grad_enabled()):
        entropy = aggregate(entropy_from_logits(logits, mask), mask, settings.aggregation, **counts)
    if settings.entropy_coef > 0:
        loss = loss - settings.entropy_coef * entropy
    return loss, ObjectiveStats(policy_term, kl_term, entropy.detach(), pg_stats)


def critic_warmup_active(step: int, warmup_steps: int) -> bool:
    """True while ``step < warmup_steps``: only the critic trains, the policy is left unchanged."""
    if warmup_steps < 0:
        raise ValueError(f"critic warm-up steps must be >= 0, got {warmup_steps}")
    return step < warmup_steps
