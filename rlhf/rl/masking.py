"""Masked reductions, whitening, and the placement of sequence rewards on response tokens.

Conventions shared by every module of :mod:`rlhf.rl`:

* token tensors are ``[B, T]``: ``B`` responses, ``T`` response tokens (right-padded);
* ``mask`` is ``[B, T]`` (bool, int or float), 1 on valid response tokens (EOS included), 0 on padding
  and on everything after EOS;
* functions return zeros at masked positions unless a docstring says otherwise, so a masked position
  never carries a stale value into a later sum;
* whatever an input holds at a masked position (NaN and inf included) changes no output and no gradient:
  inputs are passed through :func:`zero_masked` (``torch.where``) before any arithmetic, never multiplied
  by the mask, since ``NaN * 0`` is NaN.

Whitening (``masked_whiten``) uses the mean and the Bessel-corrected variance of the valid entries of the
WHOLE tensor it is given, as in the OpenAI ``lm-human-preferences`` code and TRL's ``whiten``: pass it the
whole rollout batch, never one data-parallel shard or micro-batch, or each shard is normalised on its own.

Reward placement follows Ouyang et al. 2022 ("Training language models to follow instructions with human
feedback") and Ziegler et al. 2019: the sequence score lands on the last valid token and every valid token
carries the per-token KL penalty ``-beta * kl_t``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rlhf.rl.types import TruncationMode

__all__ = [
    "TruncationMode",
    "TruncationResult",
    "apply_truncation",
    "check_token_shapes",
    "compute_token_rewards",
    "last_token_index",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "normalise_rewards",
    "place_reward_on_last_token",
    "zero_masked",
]


def check_token_shapes(mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``mask`` is 2-D ``[B, T]`` and every named tensor has its shape."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(mask.shape)}; pass one row per response")
    for name, tensor in tensors.items():
        if tensor.shape != mask.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but mask has {tuple(mask.shape)}; "
                f"both must be [B, T] over the same response tokens"
            )


def _check_scores(scores: torch.Tensor, mask: torch.Tensor, name: str = "scores") -> None:
    if scores.dim() != 1 or scores.shape[0] != mask.shape[0]:
        raise ValueError(
            f"{name} must be [B] with B={mask.shape[0]} (one value per response), got {tuple(scores.shape)}"
        )


def zero_masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` with every position where ``mask`` is 0 set to exactly 0, whatever it held (NaN, inf).

    Use it on inputs before any arithmetic: ``values * mask`` keeps NaN and turns inf into NaN. The
    gradient at a masked position is 0. Shapes: ``values`` and ``mask`` broadcastable (usually both
    ``[B, T]``); ``mask`` may be bool, int or float.
    """
    return torch.where(mask != 0, values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1.

    Shapes: ``values`` and ``mask`` broadcastable (usually both ``[B, T]``); returns a scalar when
    ``dim`` is None, else the sum over ``dim``.
    """
    weighted = zero_masked(values, mask) * mask.to(values.dtype)
    return weighted.sum() if dim is None else weighted.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the entries where ``mask`` is 1.

    Shapes as :func:`masked_sum`. An empty selection (no valid entry in the batch, or in a row when
    ``dim`` is given) yields 0 rather than NaN: its sum is 0 and its count is clamped to 1.
    """
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the valid entries of the whole tensor (Bessel-corrected when ``unbiased``).

    Shapes: ``values``, ``mask`` ``[B, T]``; returns a scalar. Raises ``ValueError`` when fewer than two
    entries are valid and ``unbiased`` is set, since the corrected variance is then undefined.
    """
    fmask = mask.to(values.dtype)
    values = zero_masked(values, fmask)
    count = fmask.sum()
    if unbiased and count.item() < 2:
        raise ValueError(
            f"masked_var needs at least 2 valid entries, got {int(count.item())}; "
            f"whiten over the whole rollout batch, not a single token"
        )
    mean = masked_sum(values, fmask) / count.clamp(min=1)
    sq = masked_sum((values - mean) ** 2, fmask)
    return sq / (count - 1) if unbiased else sq / count.clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise the valid entries of the whole batch to mean 0 and (Bessel-corrected) std 1.

    ``out = (values - mean) / sqrt(var + eps)``; with ``shift_mean=False`` the mean is added back,
    so only the scale changes (``out = (values - mean) / sqrt(var + eps) + mean``, TRL's convention).
    Statistics are taken over every valid entry of the tensor: pass the whole rollout batch.

    Shapes: ``values``, ``mask`` ``[B, T]`` -> ``[B, T]``, zero where ``mask`` is 0.
    Source: Schulman et al. 2017 (PPO) advantage normalisation; Ziegler et al. 2019 ``whiten``.
    """
    check_token_shapes(mask, values=values)
    fmask = mask.to(values.dtype)
    values = zero_masked(values, fmask)
    mean = masked_mean(values, fmask)
    var = masked_var(values, fmask, unbiased=True)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * fmask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid token of each row.

    Shapes: ``mask`` ``[B, T]`` -> ``[B]`` (int64). Raises ``ValueError`` when a row has no valid token.
    """
    valid = mask.to(torch.bool)
    empty = ~valid.any(dim=1)
    if empty.any():
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(
            f"rows {rows} of mask have no valid token; pass the response mask (every response has at "
            f"least its EOS or first token), not a loss mask with whole rows zeroed"
        )
    seq_len = mask.shape[1]
    return seq_len - 1 - valid.flip(dims=[1]).to(torch.int64).argmax(dim=1)


def place_reward_on_last_token(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put each response's scalar score on its last valid token, zeros elsewhere.

    Shapes: ``scores`` ``[B]``, ``mask`` ``[B, T]`` -> ``[B, T]`` in ``scores``' floating dtype.
    Source: Ouyang et al. 2022 (the reward model scores the full response, credited at its end).
    """
    _check_scores(scores, mask)
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    out = torch.zeros(mask.shape, dtype=dtype, device=scores.device)
    out.scatter_(1, last_token_index(mask).unsqueeze(1), scores.to(dtype).unsqueeze(1))
    return out


def compute_token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """KL-in-reward token rewards: ``r_t = -kl_coef * kl_t`` on valid tokens, plus the score on the last.

    Shapes: ``scores`` ``[B]``, ``kl`` ``[B, T]`` (per-token estimate from :func:`rlhf.rl.kl.kl_estimate`),
    ``mask`` ``[B, T]`` -> ``[B, T]``, zero where ``mask`` is 0. The result is a reward, not a loss:
    compute ``kl`` without gradient (from the rollout's log-probs).
    Source: Ziegler et al. 2019; Ouyang et al. 2022 (the ``-beta * log(pi / pi_ref)`` reward term).
    """
    check_token_shapes(mask, kl=kl)
    _check_scores(scores, mask)
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}; a negative coefficient rewards drifting away")
    return -kl_coef * zero_masked(kl, mask) + place_reward_on_last_token(scores.to(kl.dtype), mask)


def normalise_rewards(raw: torch.Tensor, mean: float | None, std: float | None, clip: float | None) -> torch.Tensor:
    """``clip((raw - mean) / std, -clip, clip)`` in fp32; without stored statistics only the clip applies.

    ``mean``/``std`` are the reward model's scores measured when it was trained (``reward_stats.json``), so
    the policy sees rewards on the scale the reward model was fitted at, whatever this batch holds (no
    per-batch normalisation). ``clip`` None leaves them unclipped. Shapes: ``raw`` ``[B]`` -> ``[B]``.
    Source: Ziegler et al. 2019 (reward normalisation to mean 0, std 1 before RL); the clip as OpenRLHF's
    ``reward_clip_range``.
    """
    if (mean is None) != (std is None):
        raise ValueError("give both the mean and the std of the reward model's scores, or neither")
    if std is not None and not std > 0:
        raise ValueError(f"the reward std must be > 0, got {std}")
    if clip is not None and not clip > 0:
        raise ValueError(f"the reward clip must be > 0 or None, got {clip}")
    rewards = raw.to(torch.float32)
    if mean is not None and std is not None:
        rewards = (rewards - mean) / std
    return rewards.clamp(-clip, clip) if clip is not None else rewards


class TruncationResult(NamedTuple):
    """What :func:`apply_truncation` returns: the adjusted scores ``[B]`` and the loss mask ``[B, T]``."""

    scores: torch.Tensor
    loss_mask: torch.Tensor


def apply_truncation(
    scores: torch.Tensor,
    truncated: torch.Tensor,
    mode: TruncationMode,
    penalty: float,
    mask: torch.Tensor,
) -> TruncationResult:
    """Handle responses that hit the length limit without EOS.

    * ``"none"``: scores and mask unchanged.
    * ``"penalty"``: ``penalty`` (>= 0) is SUBTRACTED from each truncated response's score (TRL's
      ``missing_eos_penalty``); the mask is unchanged.
    * ``"mask"``: scores unchanged, the truncated rows of the loss mask are zeroed, so those samples
      contribute no policy or value loss (DAPO's overlong filtering, Yu et al. 2025). Their scores still
      enter group baselines (GRPO/RLOO); place rewards with the response mask, not this loss mask.

    Shapes: ``scores`` ``[B]``, ``truncated`` ``[B]`` bool, ``mask`` ``[B, T]``; returns new tensors.
    """
    _check_scores(scores, mask)
    _check_scores(truncated, mask, name="truncated")
    if truncated.dtype != torch.bool:
        raise ValueError(f"truncated must be a bool tensor, got {truncated.dtype}; use `lengths >= max_len`")
    if mode == "none":
        return TruncationResult(scores.clone(), mask.clone())
    if mode == "penalty":
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0 (it is subtracted from the score), got {penalty}")
        return TruncationResult(scores - penalty * truncated.to(scores.dtype), mask.clone())
    if mode == "mask":
        keep = (~truncated).to(mask.dtype).unsqueeze(1)
        return TruncationResult(scores.clone(), mask * keep)
    raise ValueError(f"unknown truncation mode {mode!r}; use one of 'none', 'penalty', 'mask'")
