"""Policy/value/entropy losses at hand values, their gradients, and sharded-aggregation invariance."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf.rl.losses import (
    AggregationMode,
    PolicyLossSettings,
    aggregate,
    critic_warmup_active,
    entropy_from_logits,
    kl_loss,
    policy_loss,
    ppo_objective,
    truncated_importance_weights,
    value_loss,
)


def _logp_for_ratio(ratios: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp with grad, old_logp) such that exp(logp - old_logp) equals ``ratios`` on one row."""
    old = torch.full((1, len(ratios)), -1.0, dtype=torch.float64)
    logp = (old + torch.log(torch.tensor([ratios], dtype=torch.float64))).requires_grad_(True)
    return logp, old


def _per_token_loss_and_grad(
    ratio: float, adv: float, clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float | None = None
) -> tuple[float, float]:
    logp, old = _logp_for_ratio([ratio])
    advantages = torch.tensor([[adv]], dtype=torch.float64)
    loss, _ = policy_loss(logp, old, advantages, torch.ones(1, 1), clip_low, clip_high, dual_clip)
    loss.backward()
    assert logp.grad is not None
    return loss.item(), logp.grad.item()


# ---- aggregation ------------------------------------------------------------------------------------


def test_aggregation_modes_hand_values() -> None:
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert aggregate(loss_mat, mask, "token_mean").item() == pytest.approx(18 / 5)
    assert aggregate(loss_mat, mask, "seq_mean_token_sum").item() == pytest.approx((3 + 15) / 2)
    assert aggregate(loss_mat, mask, "seq_mean_token_mean").item() == pytest.approx((1.5 + 5.0) / 2)
    # A row masked out entirely does not dilute the sequence means.
    mask_row_out = torch.tensor([[0, 0, 0], [1, 1, 1]])
    assert aggregate(loss_mat, mask_row_out, "seq_mean_token_sum").item() == pytest.approx(15.0)
    assert aggregate(loss_mat, mask_row_out, "seq_mean_token_mean").item() == pytest.approx(5.0)
    assert aggregate(loss_mat, torch.zeros(2, 3), "token_mean").item() == 0.0


def test_aggregation_rejects_bad_counts() -> None:
    loss_mat, mask = torch.ones(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="smaller than this shard's own count 6"):
        aggregate(loss_mat, mask, "token_mean", global_token_count=4)
    with pytest.raises(ValueError, match="token_mean only"):
        aggregate(loss_mat, mask, "seq_mean_token_mean", global_token_count=6)
    with pytest.raises(ValueError, match="global_seq_count applies"):
        aggregate(loss_mat, mask, "token_mean", global_seq_count=2)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(loss_mat, mask, "sum")  # type: ignore[arg-type]


def _ragged_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch, seq = 8, 7
    lengths = [7, 1, 4, 6, 2, 7, 3, 5]
    mask = torch.tensor([[1] * n + [0] * (seq - n) for n in lengths], dtype=torch.float64)
    logp = -torch.rand(batch, seq, generator=gen, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(batch, seq, generator=gen, dtype=torch.float64)  # some ratios clip
    adv = torch.randn(batch, seq, generator=gen, dtype=torch.float64)
    old[0, 0], adv[0, 0] = logp[0, 0] - 1.5, -1.0  # ratio e^1.5 > 3 with A < 0: dual-clip engages
    return logp, old, adv, mask


@pytest.mark.parametrize("n_shards", [2, 4])
def test_token_mean_sharding_and_grad_accumulation_equal_full_batch(n_shards: int) -> None:
    logp, old, adv, mask = _ragged_batch(seed=4)
    clips = (0.2, 0.28, 3.0)  # clip_low, clip_high (clip-higher), dual_clip

    full_param = logp.clone().requires_grad_(True)
    full_loss, stats = policy_loss(full_param, old, adv, mask, *clips)
    full_loss.backward()
    assert stats.clip_fraction.item() > 0 and stats.dual_clip_fraction.item() > 0  # clipped tokens included
    # The unsharded token mean, by hand: masked sum of per-token losses over the count of valid tokens.
    assert full_loss.item() == pytest.approx(
        sum(_token_loss(logp, old, adv, i, t, *clips) for i in range(8) for t in range(7) if mask[i, t])
        / mask.sum().item(),
        rel=1e-12,
    )

    # Micro-batches of unequal token counts, each normalised by the GLOBAL count, summed by backward().
    acc_param = logp.clone().requires_grad_(True)
    n_tokens = int(mask.sum().item())
    total = 0.0
    for rows in torch.arange(8).chunk(n_shards):
        shard_loss, _ = policy_loss(
            acc_param[rows], old[rows], adv[rows], mask[rows], *clips, global_token_count=n_tokens
        )
        shard_loss.backward()
        total += shard_loss.item()
    assert total == pytest.approx(full_loss.item(), rel=1e-12)
    assert full_param.grad is not None and acc_param.grad is not None
    assert torch.allclose(acc_param.grad, full_param.grad, rtol=1e-12, atol=1e-15)

    # Without the global count, averaging per-shard means is NOT the token mean (shards differ in length).
    naive = (
        sum(
            policy_loss(logp[rows], old[rows], adv[rows], mask[rows], *clips)[0].item()
            for rows in torch.arange(8).chunk(n_shards)
        )
        / n_shards
    )
    assert naive != pytest.approx(full_loss.item(), rel=1e-6)


def _token_loss(
    logp: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    i: int,
    t: int,
    clip_low: float,
    clip_high: float,
    dual_clip: float,
) -> float:
    """One token's loss written out with Python floats."""
    ratio = math.exp(logp[i, t].item() - old[i, t].item())
    a = adv[i, t].item()
    loss = max(-a * ratio, -a * min(max(ratio, 1 - clip_low), 1 + clip_high))
    if a < 0:
        loss = min(loss, -a * dual_clip)
    return loss


@pytest.mark.parametrize("mode", ["seq_mean_token_sum", "seq_mean_token_mean"])
def test_seq_modes_shard_with_global_seq_count(mode: AggregationMode) -> None:
    logp, old, adv, mask = _ragged_batch(seed=5)
    full_param = logp.clone().requires_grad_(True)
    full_loss, _ = policy_loss(full_param, old, adv, mask, aggregation=mode)
    full_loss.backward()
    acc_param = logp.clone().requires_grad_(True)
    total = 0.0
    for rows in torch.arange(8).chunk(4):
        shard_loss, _ = policy_loss(
            acc_param[rows],
            old[rows],
            adv[rows],
            mask[rows],
            aggregation=mode,
            global_seq_count=8,
        )
        shard_loss.backward()
        total += shard_loss.item()
    assert total == pytest.approx(full_loss.item(), rel=1e-12)
    assert acc_param.grad is not None and full_param.grad is not None
    assert torch.allclose(acc_param.grad, full_param.grad, rtol=1e-12, atol=1e-15)


# ---- policy loss ------------------------------------------------------------------------------------


def test_ratio_one_gives_minus_mean_advantage() -> None:
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, stats = policy_loss(logp, logp.detach().clone(), adv, mask)
    assert loss.item() == pytest.approx(-(1.0 - 2.0 + 0.5 + 3.0 + 0.25) / 5, rel=1e-6)
    loss.backward()
    assert logp.grad is not None
    # d(-A * ratio)/d logp = -A * ratio = -A at ratio 1, over 5 tokens; 0 on the masked token.
    assert torch.allclose(logp.grad, torch.tensor([[-0.2, 0.4, -0.1], [-0.6, -0.05, 0.0]]), atol=1e-6)
    assert stats.clip_fraction.item() == 0.0
    assert stats.approx_kl.item() == pytest.approx(0.0, abs=1e-7)
    assert stats.ratio_mean.item() == pytest.approx(1.0) and stats.ratio_max.item() == pytest.approx(1.0)


def test_clipping_engages_at_1_3_for_positive_advantage() -> None:
    loss, grad = _per_token_loss_and_grad(1.3, 1.0, clip_low=0.2, clip_high=0.2)
    assert loss == pytest.approx(-1.2) and grad == 0.0
    # Negative advantage at ratio 1.3: the unclipped term is the larger loss, gradient flows.
    loss, grad = _per_token_loss_and_grad(1.3, -1.0, clip_low=0.2, clip_high=0.2)
    assert loss == pytest.approx(1.3) and grad == pytest.approx(1.3)
    # Ratio 0.7: negative advantage is clipped at 1 - 0.2, positive advantage is not.
    loss, grad = _per_token_loss_and_grad(0.7, -1.0, clip_low=0.2, clip_high=0.2)
    assert loss == pytest.approx(0.8) and grad == 0.0
    loss, grad = _per_token_loss_and_grad(0.7, 1.0, clip_low=0.2, clip_high=0.2)
    assert loss == pytest.approx(-0.7) and grad == pytest.approx(-0.7)
    # Inside the range nothing is clipped.
    loss, grad = _per_token_loss_and_grad(1.1, 2.0, clip_low=0.2, clip_high=0.2)
    assert loss == pytest.approx(-2.2) and grad == pytest.approx(-2.2)


def test_clip_higher_lets_ratio_rise_to_one_plus_clip_high() -> None:
    loss, grad = _per_token_loss_and_grad(1.25, 1.0, clip_low=0.2, clip_high=0.28)
    assert loss == pytest.approx(-1.25) and grad == pytest.approx(-1.25)
    loss, grad = _per_token_loss_and_grad(1.3, 1.0, clip_low=0.2, clip_high=0.28)
    assert loss == pytest.approx(-1.28) and grad == 0.0
    # The low side is unchanged by clip_high.
    loss, grad = _per_token_loss_and_grad(0.75, -1.0, clip_low=0.2, clip_high=0.28)
    assert loss == pytest.approx(0.8) and grad == 0.0


def test_dual_clip_bounds_negative_advantage_loss() -> None:
    loss, grad = _per_token_loss_and_grad(5.0, -2.0, dual_clip=3.0)
    assert loss == pytest.approx(3.0 * 2.0) and grad == 0.0
    # Without dual-clip the same token's loss grows with the ratio.
    loss, grad = _per_token_loss_and_grad(5.0, -2.0, dual_clip=None)
    assert loss == pytest.approx(10.0) and grad == pytest.approx(10.0)
    # Below the bound dual-clip changes nothing; positive advantages are never dual-clipped.
    loss, grad = _per_token_loss_and_grad(2.0, -2.0, dual_clip=3.0)
    assert loss == pytest.approx(4.0) and grad == pytest.approx(4.0)
    loss, grad = _per_token_loss_and_grad(5.0, 2.0, dual_clip=3.0)
    assert loss == pytest.approx(-2.4) and grad == 0.0


def test_policy_loss_stats() -> None:
    ratios = [1.0, 1.3, 0.7, 5.0, 1.1, 9.0]
    advs = [1.0, 1.0, -1.0, -1.0, 1.0, 1.0]
    logp, old = _logp_for_ratio(ratios)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    _, stats = policy_loss(logp, old, torch.tensor([advs], dtype=torch.float64), mask, dual_clip=3.0)
    # Clipped: 1.3 (A>0), 0.7 (A<0); 5.0 with A<0 takes the unclipped branch, then dual-clip. 9.0 is masked.
    assert stats.clip_fraction.item() == pytest.approx(2 / 5)
    assert stats.dual_clip_fraction.item() == pytest.approx(1 / 5)
    assert stats.ratio_mean.item() == pytest.approx((1.0 + 1.3 + 0.7 + 5.0 + 1.1) / 5)
    assert stats.ratio_max.item() == pytest.approx(5.0)
    expected_kl = sum(r - 1 - math.log(r) for r in ratios[:5]) / 5
    assert stats.approx_kl.item() == pytest.approx(expected_kl)
    assert set(stats.to_dict()) == {"clip_fraction", "dual_clip_fraction", "approx_kl", "ratio_mean", "ratio_max"}
    # A micro-batch whose tokens are all masked (e.g. all truncated) gives loss 0 and zero stats, not NaN.
    empty_loss, empty = policy_loss(logp, old, torch.ones(1, 6, dtype=torch.float64), torch.zeros(1, 6))
    assert empty_loss.item() == 0.0 and all(v == 0.0 for v in empty.to_dict().values())


def test_policy_loss_rejects_bad_settings() -> None:
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        policy_loss(x, x, x, torch.ones(1, 2), dual_clip=0.5)
    with pytest.raises(ValueError, match="clip_low"):
        policy_loss(x, x, x, torch.ones(1, 2), clip_low=1.0)
    with pytest.raises(ValueError, match="advantages has shape"):
        policy_loss(x, x, torch.zeros(2, 2), torch.ones(1, 2))


# ---- truncated importance sampling -----------------------------------------------------------------


def test_truncated_importance_weights_hand_values() -> None:
    # learner/rollout probability ratios 1, 1.5, 0.5, 4 (capped at 2) and a padded token.
    rollout = torch.log(torch.tensor([[0.2, 0.2, 0.4, 0.1, 0.3]], dtype=torch.float64))
    learner = torch.log(torch.tensor([[0.2, 0.3, 0.2, 0.4, 0.9]], dtype=torch.float64))
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    weights = truncated_importance_weights(learner, rollout, mask, cap=2.0)
    assert weights[0].tolist() == pytest.approx([1.0, 1.5, 0.5, 2.0, 0.0])
    assert not weights.requires_grad
    with pytest.raises(ValueError, match="cap must be >= 1"):
        truncated_importance_weights(learner, rollout, mask, cap=0.5)
    with pytest.raises(ValueError, match="rollout_logp has shape"):
        truncated_importance_weights(learner, rollout[:, :3], mask)


def test_importance_weights_scale_each_tokens_loss_and_gradient() -> None:
    logp, old = _logp_for_ratio([1.0, 1.1, 1.3])
    adv = torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64)
    weights = torch.tensor([[0.5, 2.0, 1.0]], dtype=torch.float64)
    loss, _ = policy_loss(logp, old, adv, torch.ones(1, 3), is_weights=weights)
    # per token: -A*rho*w = -0.5, -4.4 and the clipped -1.2 (weight 1): mean over 3 tokens.
    assert loss.item() == pytest.approx((-0.5 - 4.4 - 1.2) / 3)
    loss.backward()
    assert logp.grad is not None
    assert logp.grad[0].tolist() == pytest.approx([-0.5 / 3, -4.4 / 3, 0.0])
    # Weights of 1 change nothing.
    plain, _ = policy_loss(logp.detach(), old, adv, torch.ones(1, 3))
    ones, _ = policy_loss(logp.detach(), old, adv, torch.ones(1, 3), is_weights=torch.ones(1, 3))
    assert plain.item() == ones.item()


# ---- value loss -------------------------------------------------------------------------------------


def test_value_loss_clipping() -> None:
    old = torch.tensor([[1.0, 1.0, 1.0]])
    returns = torch.tensor([[2.0, 2.0, 0.0]])
    values = torch.tensor([[1.5, 1.1, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = value_loss(values, old, returns, mask, clip=0.2)
    # Token 0: unclipped (1.5-2)^2 = 0.25, clipped (1.2-2)^2 = 0.64 -> 0.64 (no gradient).
    # Token 1: inside the clip range, (1.1-2)^2 = 0.81.  Loss = 0.5 * (0.64 + 0.81) / 2.
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2, rel=1e-6)
    loss.backward()
    assert values.grad is not None
    assert torch.allclose(values.grad, torch.tensor([[0.0, 0.5 * 2 * (1.1 - 2.0) / 2, 0.0]]), atol=1e-6)
    assert stats.clip_fraction.item() == pytest.approx(0.5)
    assert stats.value_error.item() == pytest.approx((0.25 + 0.81) / 2, rel=1e-6)

    unclipped, stats = value_loss(values, old, returns, mask, clip=None)
    assert unclipped.item() == pytest.approx(0.5 * (0.25 + 0.81) / 2, rel=1e-6)
    assert stats.clip_fraction.item() == 0.0
    with pytest.raises(ValueError, match="value clip"):
        value_loss(values, old, returns, mask, clip=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_clip_fraction_counts_only_an_active_clip(dtype: torch.dtype) -> None:
    # V - V_old = -0.6 lies inside the clip of 1, so V_clip is V; in float64 V_old + (V - V_old) rounds to
    # -0.9000000000000001, whose error is a hair larger than V's: a rounding tie, not a clip.
    values = torch.tensor([[-0.9, 2.0, 0.5]], dtype=dtype, requires_grad=True)
    old = torch.tensor([[-0.3, 0.5, 0.0]], dtype=dtype)
    returns = torch.tensor([[-0.8, 0.0, 3.0]], dtype=dtype)
    loss, stats = value_loss(values, old, returns, torch.ones(1, 3), clip=1.0)
    # Token 1: V_clip = 1.5 is nearer R = 0 than V = 2 (the max takes V, gradient flows): not clipped.
    # Token 2: V_clip = 0.5 is V (|V - V_old| = 0.5 < 1): not clipped.
    assert stats.clip_fraction.item() == 0.0
    loss.backward()
    assert values.grad is not None
    # d/dV of 0.5 * (V - R)^2 / 3 on every token: no token's gradient is cut by the clip.
    assert values.grad[0].tolist() == pytest.approx([-0.1 / 3, 2.0 / 3, -2.5 / 3], rel=1e-6)

    # Every V, V_old, R on a grid of tenths in [-2, 2], clip 1: a token is clipped exactly when
    # |V - V_old| > 1 and V_clip is farther from R than V, decided here in integer tenths.
    tenths = torch.arange(-20, 21)
    i, j, k = torch.meshgrid(tenths, tenths, tenths, indexing="ij")  # V, V_old, R in tenths
    i_clip = j + (i - j).clamp(-10, 10)
    truth = ((i - j).abs() > 10) & ((i_clip - k).abs() > (i - k).abs())
    v, v_old, r = (x.reshape(41 * 41, 41).to(dtype) / 10 for x in (i, j, k))
    truth = truth.reshape(41 * 41, 41)
    assert value_loss(v, v_old, r, truth, clip=1.0)[1].clip_fraction.item() == 1.0
    assert value_loss(v, v_old, r, ~truth, clip=1.0)[1].clip_fraction.item() == 0.0


# ---- entropy ----------------------------------------------------------------------------------------


def test_entropy_hand_values() -> None:
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]],
            [[50.0, 0.0, 0.0, 0.0], [7.0, 7.0, 7.0, 7.0]],
        ]
    )
    mask = torch.tensor([[1, 1], [1, 0]])
    ent = entropy_from_logits(logits, mask)
    assert ent[0, 0].item() == pytest.approx(math.log(4.0), rel=1e-6)  # uniform over 4
    # p = (1/4, 3/4, 0, 0): H = -(1/4 ln 1/4 + 3/4 ln 3/4); -inf logits contribute 0, not NaN.
    assert ent[0, 1].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    assert ent[1, 0].item() == pytest.approx(0.0, abs=1e-12 + 3 * 50 * math.exp(-50))
    assert ent[1, 1].item() == 0.0  # masked


def test_entropy_chunking_and_gradient_match_direct_formula() -> None:
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    chunked_in = logits.clone().requires_grad_(True)
    chunked = entropy_from_logits(chunked_in, mask, chunk_size=2)
    for i in range(3):
        for t in range(5):
            probs = [math.exp(z) for z in logits[i, t].tolist()]
            total = sum(probs)
            h = -sum(p / total * math.log(p / total) for p in probs)
            assert chunked[i, t].item() == pytest.approx(h if mask[i, t] else 0.0, rel=1e-12, abs=1e-15)
    chunked.sum().backward()
    direct_in = logits.clone().requires_grad_(True)
    p = torch.softmax(direct_in, dim=-1)
    (-(p * torch.log_softmax(direct_in, dim=-1)).sum(-1) * mask).sum().backward()
    assert chunked_in.grad is not None and direct_in.grad is not None
    assert torch.allclose(chunked_in.grad, direct_in.grad, rtol=1e-10, atol=1e-14)


def test_entropy_of_large_logits_matches_a_float64_reference() -> None:
    # fp32 logits near 1e4, logits spread over +-1e4, and a row with banned (-inf) tokens near 1e4.
    gen = torch.Generator().manual_seed(8)
    logits = torch.cat(
        [
            1e4 + 3.0 * torch.randn(1, 4, 64, generator=gen),
            3e3 * torch.randn(1, 4, 64, generator=gen),
            torch.where(torch.arange(64) % 2 == 0, 1e4 + torch.randn(1, 4, 64, generator=gen), -math.inf),
        ]
    )
    mask = torch.ones(3, 4)
    mask[1, 3] = 0
    z = logits.clone().requires_grad_(True)
    entropy = entropy_from_logits(z, mask)
    entropy.sum().backward()

    # The same fp32 values in float64: H = -sum p log p and dH/dz_v = -p_v (log p_v + H), 0 where p_v = 0.
    z64 = logits.to(torch.float64)
    p = torch.softmax(z64, dim=-1)
    log_p = torch.where(torch.isneginf(z64), torch.zeros_like(z64), torch.log_softmax(z64, dim=-1))
    reference = -(p * log_p).sum(-1) * mask
    reference_grad = -p * (log_p + reference.unsqueeze(-1)) * mask.unsqueeze(-1)

    assert entropy.dtype == torch.float32 and torch.isfinite(entropy).all()
    assert torch.allclose(entropy.to(torch.float64), reference, rtol=1e-5, atol=1e-5)
    assert reference[0].min() > 0.5  # the rows near 1e4 carry real entropy, not a rounding residue
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert torch.allclose(z.grad.to(torch.float64), reference_grad, rtol=1e-4, atol=1e-6)


# ---- padding ----------------------------------------------------------------------------------------

_PAD_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])


def _with_padding(x: torch.Tensor, fill: float) -> torch.Tensor:
    """``x`` with ``fill`` at every position where ``_PAD_MASK`` is 0 (along the vocabulary too for logits)."""
    keep = _PAD_MASK.to(torch.bool)
    keep = keep.unsqueeze(-1) if x.dim() == 3 else keep
    return torch.where(keep, x, torch.tensor(fill, dtype=x.dtype))


def _every_loss_output(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every loss, statistic and input gradient of the functions of ``rlhf.rl.losses`` on the inputs ``t``."""
    mask = _PAD_MASK
    logits = t["logits"].clone().requires_grad_(True)
    logp = t["logp"].clone().requires_grad_(True)
    values = t["values"].clone().requires_grad_(True)
    out = {mode: aggregate(t["loss_mat"], mask, mode)
           for mode in ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean")}
    out["is_weights"] = truncated_importance_weights(t["old_logp"], t["rollout_logp"], mask)
    out["policy_loss"], pg_stats = policy_loss(logp, t["old_logp"], t["adv"], mask, 0.2, 0.28, 3.0,
                                               is_weights=out["is_weights"])
    out["value_loss"], vf_stats = value_loss(values, t["old_values"], t["returns"], mask, clip=0.2)
    for kind in ("k1", "k2", "k3"):
        out[f"kl_loss_{kind}"] = kl_loss(logp, t["ref_logp"], mask, kind)
    out["entropy"] = entropy_from_logits(logits, mask)
    settings = PolicyLossSettings(dual_clip=3.0, entropy_coef=0.1, kl_in_loss=True)
    out["objective"], obj_stats = ppo_objective(logp, logits, t["old_logp"], t["adv"], mask, settings, kl_coef=0.1,
                                                ref_logp=t["ref_logp"], is_weights=out["is_weights"])
    sum(loss.sum() for loss in out.values() if loss.requires_grad).backward()
    out.update({f"policy_stats.{k}": v for k, v in vars(pg_stats).items()})
    out.update({f"value_stats.{k}": v for k, v in vars(vf_stats).items()})
    out.update({f"objective_stats.{k}": v for k, v in vars(obj_stats).items() if isinstance(v, torch.Tensor)})
    assert logits.grad is not None and logp.grad is not None and values.grad is not None
    return {**out, "grad logits": logits.grad, "grad logp": logp.grad, "grad values": values.grad}


@pytest.mark.parametrize("fill", [math.nan, math.inf, -math.inf])
def test_losses_ignore_whatever_padding_holds(fill: float) -> None:
    gen = torch.Generator().manual_seed(9)
    clean = {name: torch.randn(4, 4, generator=gen, dtype=torch.float64)
             for name in ("loss_mat", "adv", "values", "old_values", "returns")}
    for name in ("logp", "old_logp", "rollout_logp", "ref_logp"):
        clean[name] = -torch.rand(4, 4, generator=gen, dtype=torch.float64) * 2
    clean["logits"] = torch.randn(4, 4, 5, generator=gen, dtype=torch.float64)
    expected = _every_loss_output({name: _with_padding(x, 0.0) for name, x in clean.items()})
    got = _every_loss_output({name: _with_padding(x, fill) for name, x in clean.items()})
    assert got.keys() == expected.keys()
    broken = [name for name in got if not (torch.isfinite(got[name]).all() and torch.equal(got[name], expected[name]))]
    assert not broken, f"padding leaks into {broken}"
    assert expected["grad logp"][0, :3].abs().min() > 0  # the valid tokens do carry gradient


# ---- the whole policy objective ---------------------------------------------------------------------

# Two tokens over a vocabulary of 2: p(t0) = (1/2, 1/2), token 0 sampled; p(t1) = (1/4, 3/4), token 1 sampled.
_LOGITS = [[[0.0, 0.0], [0.0, math.log(3.0)]]]
_TOKENS = torch.tensor([[0, 1]])
_REF = [[math.log(0.25), math.log(0.75)]]  # the reference halves token 0's probability and agrees on token 1
_H = [math.log(2.0), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))]  # entropies of the two positions
_K3 = 0.5 - 1.0 + math.log(2.0)  # exp(ref - logp) - 1 - (ref - logp) at token 0; 0 at token 1
_SETTINGS = PolicyLossSettings(kl_in_loss=True, kl_estimator="k3", entropy_coef=0.01)


def _objective_inputs(logp_leaf: bool):
    logits = torch.tensor(_LOGITS, dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, _TOKENS.unsqueeze(-1)).squeeze(-1)
    if logp_leaf:  # log-probs as their own leaf: the entropy term is then the only path into the logits
        logp = logp.detach().requires_grad_(True)
    return logits, logp, logp.detach().clone(), torch.tensor([[1.0, -2.0]], dtype=torch.float64)


def test_ppo_objective_hand_values_and_terms() -> None:
    logits, logp, old, adv = _objective_inputs(logp_leaf=True)
    ref = torch.tensor(_REF, dtype=torch.float64)
    loss, stats = ppo_objective(logp, logits, old, adv, torch.ones(1, 2), _SETTINGS, kl_coef=0.1, ref_logp=ref)
    # ratio 1: policy loss -mean(A) = 0.5; KL (k3) mean _K3 / 2; entropy mean of _H.
    assert stats.policy_loss.item() == pytest.approx(0.5)
    assert stats.kl_loss is not None and stats.kl_loss.item() == pytest.approx(_K3 / 2)
    assert stats.entropy.item() == pytest.approx(sum(_H) / 2)
    assert loss.item() == pytest.approx(0.5 + 0.1 * _K3 / 2 - 0.01 * sum(_H) / 2)
    assert stats.policy.ratio_mean.item() == pytest.approx(1.0) and not stats.policy_loss.requires_grad
    loss.backward()
    assert logp.grad is not None and logits.grad is not None
    # d/d logp_t: (-A_t * ratio + kl_coef * (1 - exp(ref_t - logp_t))) / 2 tokens
    assert logp.grad[0].tolist() == pytest.approx([(-1.0 + 0.1 * (1 - 0.5)) / 2, 2.0 / 2])
    # d/d z of -0.01 * H / 2, with dH/dz_v = -p_v (log p_v + H): 0 at the uniform position
    d_h = [-p * (math.log(p) + _H[1]) for p in (0.25, 0.75)]
    assert logits.grad[0, 0].tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert logits.grad[0, 1].tolist() == pytest.approx([-0.01 * d / 2 for d in d_h])


def test_ppo_objective_without_kl_or_entropy_bonus() -> None:
    logits, logp, old, adv = _objective_inputs(logp_leaf=True)
    plain = PolicyLossSettings()
    loss, stats = ppo_objective(logp, logits, old, adv, torch.ones(1, 2), plain, kl_coef=0.1,
                                ref_logp=torch.tensor(_REF, dtype=torch.float64))
    assert loss.item() == pytest.approx(0.5) and stats.kl_loss is None  # the KL is in the reward, not here
    assert stats.entropy.item() == pytest.approx(sum(_H) / 2)  # still reported
    loss.backward()
    assert logits.grad is None  # entropy without a bonus is computed without gradient
    with pytest.raises(ValueError, match="no reference log-probs"):
        ppo_objective(logp, logits, old, adv, torch.ones(1, 2), _SETTINGS, kl_coef=0.1)


def test_ppo_objective_weights_only_the_policy_term() -> None:
    logits, logp, old, adv = _objective_inputs(logp_leaf=False)
    ref = torch.tensor(_REF, dtype=torch.float64)
    mask = torch.ones(1, 2)
    zero = torch.zeros(1, 2, dtype=torch.float64)
    loss, stats = ppo_objective(logp, logits, old, adv, mask, _SETTINGS, kl_coef=0.1, ref_logp=ref, is_weights=zero)
    assert stats.policy_loss.item() == 0.0
    assert loss.item() == pytest.approx(0.1 * _K3 / 2 - 0.01 * sum(_H) / 2)


def test_ppo_objective_gradient_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, 5, (2, 3), generator=gen)
    old = torch.log_softmax(logits + 0.05 * torch.randn(2, 3, 5, generator=gen, dtype=torch.float64), -1)
    old = old.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    ref = old - 0.1
    adv = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    weights = torch.tensor([[1.0, 0.5, 2.0], [1.0, 1.5, 0.0]], dtype=torch.float64)
    settings = PolicyLossSettings(clip_low=0.2, clip_high=0.28, kl_in_loss=True, entropy_coef=0.05)

    def objective(z: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(z, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return ppo_objective(logp, z, old, adv, mask, settings, kl_coef=0.2, ref_logp=ref, is_weights=weights)[0]

    assert torch.autograd.gradcheck(objective, (logits.clone().requires_grad_(True),))


def test_ppo_objective_summed_over_shards_equals_the_whole_batch() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 3, 6, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, 6, (4, 3), generator=gen)
    old = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1) + 0.1
    ref, adv = old - 0.2, torch.randn(4, 3, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    settings = PolicyLossSettings(kl_in_loss=True, entropy_coef=0.1)

    def run(rows: slice, count: int | None):
        z = logits[rows].clone().requires_grad_(True)
        logp = torch.log_softmax(z, -1).gather(-1, tokens[rows].unsqueeze(-1)).squeeze(-1)
        loss, _ = ppo_objective(logp, z, old[rows], adv[rows], mask[rows], settings, kl_coef=0.3, ref_logp=ref[rows],
                                global_token_count=count)
        loss.backward()
        return loss, z.grad

    whole, whole_grad = run(slice(0, 4), None)
    first, first_grad = run(slice(0, 1), int(mask.sum()))
    rest, rest_grad = run(slice(1, 4), int(mask.sum()))
    assert (first + rest).item() == pytest.approx(whole.item(), rel=1e-12)
    assert torch.allclose(torch.cat([first_grad, rest_grad]), whole_grad, rtol=1e-12, atol=1e-15)


def test_policy_loss_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        PolicyLossSettings(dual_clip=1.0)
    with pytest.raises(ValueError, match="entropy_coef"):
        PolicyLossSettings(entropy_coef=-0.1)


def test_critic_warmup() -> None:
    assert critic_warmup_active(0, 3) and critic_warmup_active(2, 3)
    assert not critic_warmup_active(3, 3) and not critic_warmup_active(0, 0)
    with pytest.raises(ValueError, match="warm-up"):
        critic_warmup_active(0, -1)
