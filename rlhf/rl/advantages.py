"""Advantage estimators: GAE (with a critic) and the critic-free GRPO, RLOO and REINFORCE++.

Every estimator returns token-level advantages ``[B, T]`` that are zero where ``mask`` is 0, whatever
its token inputs hold there (NaN and inf included), and runs without gradient (advantages are constants
in the policy loss).

* :func:`gae`: Generalized Advantage Estimation, Schulman et al. 2016 (arXiv:1506.02438).
  ``delta_t = r_t + gamma * V_{t+1} - V_t``, ``A_t = delta_t + gamma * lam * A_{t+1}``, ``R_t = A_t + V_t``.
  Masked positions are skipped: the recursion carries ``V_{t+1}`` and ``A_{t+1}`` across them unchanged,
  so with right padding the value after the last valid token is 0 (the episode ends at EOS) whatever the
  critic output on padding, and rewards on padding are ignored. No whitening here: whiten the advantages
  of the whole rollout batch with :func:`rlhf.rl.masking.masked_whiten`.
* :func:`grpo_advantages`: group-normalised outcome reward, Shao et al. 2024 (DeepSeekMath, arXiv:2402.03300):
  ``A_i = (r_i - mean(group)) / (std(group) + eps)``, the same for every token of response ``i``.
  ``std_normalise=False`` drops the division (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783).
* :func:`rloo_advantages`: REINFORCE Leave-One-Out, Ahmadian et al. 2024 (arXiv:2402.14740), after Kool et
  al. 2019: ``A_i = r_i - (sum_{j != i} r_j) / (k - 1)``.
* :func:`reinforce_pp_advantages`: REINFORCE++, Hu et al. 2025 (arXiv:2501.03262): discounted return-to-go
  of the token rewards (KL-in-reward plus the final score), whitened over the whole batch.
* :func:`compute_advantages`: the one entry point of a training step: places the rewards and the KL
  penalty the way each estimator needs them, then calls it.

Groups: responses to the same prompt form a group, given either as ``group_size`` (the batch holds
``B / group_size`` prompts, each prompt's responses consecutive) or as ``group_ids`` ``[B]`` (any layout).
A group needs at least 2 responses: with one there is no baseline. Compute advantages on the whole
rollout batch before it is split over ranks or micro-batches, so that no group (and no whitening) is split.

Known failure mode: when every response of a group gets the same reward, its advantages are 0 and it
contributes no gradient; when that holds for the whole batch the policy loss is exactly 0 ("loss is 0"
reports for GRPO). Such groups are set to exactly 0 here, never NaN; ``eps`` bounds the amplification of
near-constant groups to ``|r_i - mean| / eps``. The remedy is more diverse samples (larger groups, higher
temperature) or dropping those groups (DAPO dynamic sampling); log :func:`group_mean_std`'s std to see it.
"""

from __future__ import annotations

import torch

from rlhf.rl.masking import check_token_shapes, compute_token_rewards, masked_sum, masked_whiten, zero_masked
from rlhf.rl.types import Advantage

__all__ = [
    "compute_advantages",
    "gae",
    "group_mean_std",
    "grpo_advantages",
    "reinforce_pp_advantages",
    "rloo_advantages",
]


def _check_discount(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation over response tokens (Schulman et al. 2016).

    Shapes: ``rewards`` (token rewards, e.g. from :func:`rlhf.rl.masking.compute_token_rewards`),
    ``values`` (critic output at each response token), ``mask``: all ``[B, T]``.
    Returns ``(advantages, returns)``, both ``[B, T]`` and zero where ``mask`` is 0; ``returns`` are the
    critic's regression targets ``A_t + V_t``.
    """
    check_token_shapes(mask, rewards=rewards, values=values)
    _check_discount("gamma", gamma)
    _check_discount("lam", lam)
    fmask = mask.to(values.dtype)
    values = zero_masked(values, fmask)
    rewards = zero_masked(rewards.to(values.dtype), fmask)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        m = fmask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        advantages[:, t] = adv_t * m
        next_value = m * values[:, t] + (1 - m) * next_value
        next_adv = m * adv_t + (1 - m) * next_adv
    returns = (advantages + values) * fmask
    return advantages, returns


def _group_index(
    batch_size: int, group_size: int | None, group_ids: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Map each sample to a group number in ``[0, n_groups)``; returns ``(index [B], n_groups)``."""
    either = "pass exactly one of group_size (consecutive groups) or group_ids (one id per sample)"
    if group_ids is None:
        if group_size is None:
            raise ValueError(either)
        if group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (responses per prompt), got {group_size}; "
                f"with one response per prompt there is no group baseline"
            )
        if batch_size % group_size != 0:
            raise ValueError(
                f"batch size {batch_size} is not a multiple of group_size {group_size}; "
                f"generate group_size responses for every prompt"
            )
        index = torch.arange(batch_size, device=device) // group_size
        return index, batch_size // group_size
    if group_size is not None:
        raise ValueError(either)
    if group_ids.shape != (batch_size,) or group_ids.is_floating_point():
        raise ValueError(
            f"group_ids must be an integer tensor of shape [{batch_size}], "
            f"got {group_ids.dtype} {tuple(group_ids.shape)}"
        )
    unique_ids, index, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    if counts.min().item() < 2:
        lonely = unique_ids[counts < 2].tolist()
        raise ValueError(f"groups {lonely} have a single response; every prompt needs >= 2 responses for a baseline")
    return index.to(device), int(counts.numel())


def _group_centered(
    scores: torch.Tensor, group_size: int | None, group_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample, in float64: ``(r_i - group mean, group std (Bessel), group count)``, each ``[B]``.

    ``r_i - mean`` is exactly 0 for groups whose rewards are all equal (float rounding in the mean
    would otherwise leave a residue that ``/ (std + eps)`` amplifies).
    """
    if scores.dim() != 1:
        raise ValueError(f"scores must be [B] (one scalar reward per response), got {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; check the reward model output before computing advantages")
    index, n_groups = _group_index(scores.shape[0], group_size, group_ids, scores.device)
    r = scores.detach().to(torch.float64)
    counts = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, index, torch.ones_like(r))
    sums = torch.zeros_like(counts).index_add_(0, index, r)
    centered = r - (sums / counts)[index]
    sq = torch.zeros_like(counts).index_add_(0, index, centered.square())
    std = torch.sqrt(sq / (counts - 1))
    gmax = torch.full_like(counts, -torch.inf).scatter_reduce(0, index, r, reduce="amax")
    gmin = torch.full_like(counts, torch.inf).scatter_reduce(0, index, r, reduce="amin")
    constant = (gmax == gmin)[index]
    centered = torch.where(constant, torch.zeros_like(centered), centered)
    std_per_sample = std[index]
    std_per_sample = torch.where(constant, torch.zeros_like(std_per_sample), std_per_sample)
    return centered, std_per_sample, counts[index]


def _check_rows(scores: torch.Tensor, mask: torch.Tensor) -> None:
    check_token_shapes(mask)
    if scores.dim() != 1 or scores.shape[0] != mask.shape[0]:
        raise ValueError(
            f"scores must be [B] with B={mask.shape[0]} (one reward per response), got {tuple(scores.shape)}"
        )


def _float_dtype(scores: torch.Tensor) -> torch.dtype:
    return scores.dtype if scores.is_floating_point() else torch.float32


def group_mean_std(
    scores: torch.Tensor, *, group_size: int | None = None, group_ids: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's group reward mean and (Bessel-corrected) std, both ``[B]``.

    Shapes: ``scores`` ``[B]``. The std is exactly 0 for groups of identical rewards: log the fraction
    of such groups to catch the "loss is 0" failure mode early.
    """
    centered, std, _ = _group_centered(scores, group_size, group_ids)
    dtype = _float_dtype(scores)
    return (scores.detach().to(torch.float64) - centered).to(dtype), std.to(dtype)


@torch.no_grad()
def grpo_advantages(
    scores: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int | None = None,
    group_ids: torch.Tensor | None = None,
    eps: float = 1e-6,
    std_normalise: bool = True,
) -> torch.Tensor:
    """GRPO outcome advantages (Shao et al. 2024, DeepSeekMath sec. 4.1.2).

    ``A_i = (r_i - mean_g) / (std_g + eps)`` (``std_normalise=True``) or ``A_i = r_i - mean_g`` (Dr. GRPO),
    with the unbiased group std, broadcast to every valid token of response ``i``.
    Shapes: ``scores`` ``[B]``, ``mask`` ``[B, T]`` -> ``[B, T]`` (zero where ``mask`` is 0).
    Groups of identical rewards get exactly 0 advantage (see the module docstring).
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    _check_rows(scores, mask)
    centered, std, _ = _group_centered(scores, group_size, group_ids)
    adv = centered
    if std_normalise:
        adv = torch.where(std > 0, centered / (std + eps), torch.zeros_like(centered))
    dtype = _float_dtype(scores)
    return adv.to(dtype).unsqueeze(1) * mask.to(dtype)


@torch.no_grad()
def rloo_advantages(
    scores: torch.Tensor,
    mask: torch.Tensor,
    *,
    group_size: int | None = None,
    group_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """RLOO advantages (Ahmadian et al. 2024): each reward minus the mean of the OTHER rewards.

    ``A_i = r_i - (sum_g - r_i) / (k - 1) = k / (k - 1) * (r_i - mean_g)`` for a group of ``k >= 2``.
    Shapes: ``scores`` ``[B]``, ``mask`` ``[B, T]`` -> ``[B, T]`` (zero where ``mask`` is 0).
    """
    _check_rows(scores, mask)
    centered, _, counts = _group_centered(scores, group_size, group_ids)
    adv = centered * counts / (counts - 1)
    dtype = _float_dtype(scores)
    return adv.to(dtype).unsqueeze(1) * mask.to(dtype)


@torch.no_grad()
def reinforce_pp_advantages(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ advantages (Hu et al. 2025): whitened discounted return-to-go.

    ``G_t = r_t + gamma * G_{t+1}`` over valid tokens (masked positions skipped, so the return stops at
    EOS and rewards on padding are ignored), then ``A = masked_whiten(G)`` over every valid token of the
    whole batch. ``token_rewards`` usually come from :func:`rlhf.rl.masking.compute_token_rewards`
    (score on the last token, ``-beta * kl`` on every token).
    Shapes: ``token_rewards``, ``mask`` ``[B, T]``; returns ``(advantages, returns)``, both ``[B, T]``.
    """
    check_token_shapes(mask, token_rewards=token_rewards)
    _check_discount("gamma", gamma)
    fmask = mask.to(token_rewards.dtype)
    token_rewards = zero_masked(token_rewards, fmask)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        m = fmask[:, t]
        g_t = token_rewards[:, t] + gamma * running
        returns[:, t] = g_t * m
        running = m * g_t + (1 - m) * running
    return masked_whiten(returns, mask), returns


def compute_advantages(
    advantage: Advantage,
    scores: torch.Tensor,
    kl: torch.Tensor,
    kl_coef: float,
    kl_in_reward: bool,
    mask: torch.Tensor,
    loss_mask: torch.Tensor,
    group_size: int,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten: bool = True,
    std_normalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token advantages ``[B, T]`` of estimator ``advantage`` and, for GAE, the critic's returns ``[B, T]``
    (else None), on the whole rollout batch.

    ``scores`` ``[B]`` (shaped rewards), ``kl`` ``[B, T]`` (per-token estimate, zero on padding), ``mask``
    the response mask, ``loss_mask`` the mask after truncation handling (GAE whitens over it). With the KL
    in the reward (``kl_in_reward``), GAE and REINFORCE++ get ``-kl_coef * kl_t`` on every token and the
    score on the last (:func:`rlhf.rl.masking.compute_token_rewards`); GRPO and RLOO, which score whole
    sequences, get ``score - kl_coef * sum_t kl_t``. ``group_size`` is ``n``, the replies per prompt
    (consecutive rows). GAE needs the critic's ``values`` ``[B, T]``, and whitens its advantages over the
    batch when ``whiten`` (and at least 2 tokens are in the loss).
    """
    beta = kl_coef if kl_in_reward else 0.0
    if advantage == "gae":
        if values is None:
            raise ValueError("GAE needs the critic's values")
        adv, returns = gae(compute_token_rewards(scores, kl, beta, mask), values, mask, gamma, lam)
        if whiten and loss_mask.sum() >= 2:
            adv = masked_whiten(adv, loss_mask)
        return adv, returns
    if advantage == "reinforce_pp":
        adv, _ = reinforce_pp_advantages(compute_token_rewards(scores, kl, beta, mask), mask, gamma)
        return adv, None
    sequence_scores = scores - beta * masked_sum(kl, mask, dim=1)
    if advantage == "grpo":
        return grpo_advantages(sequence_scores, mask, group_size=group_size, std_normalise=std_normalise), None
    if advantage == "rloo":
        return rloo_advantages(sequence_scores, mask, group_size=group_size), None
    raise ValueError(f"unknown advantage estimator {advantage!r}; use gae, grpo, rloo or reinforce_pp")
