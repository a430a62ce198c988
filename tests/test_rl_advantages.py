"""Advantage estimators, whitening and reward placement, checked against hand values and plain loops."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from rlhf.rl.advantages import (
    compute_advantages,
    gae,
    group_mean_std,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from rlhf.rl.masking import (
    apply_truncation,
    compute_token_rewards,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    normalise_rewards,
    place_reward_on_last_token,
)


def _gae_loop(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Textbook GAE on one unpadded episode; the value after the last step is 0."""
    adv = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv


# ---- masking ----------------------------------------------------------------------------------------


def test_masked_sum_and_mean() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_sum(x, mask).item() == 6.0
    assert masked_mean(x, mask).item() == 2.0
    assert masked_mean(x, mask, dim=1).tolist() == [1.5, 3.0]
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0  # empty selection: 0, not NaN


def test_masked_whiten_uses_whole_batch_statistics() -> None:
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(4, 6, generator=gen) + torch.tensor([[-3.0], [0.0], [2.0], [5.0]])
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool
    )
    out = masked_whiten(values, mask)
    valid_out = [out[i, j].item() for i in range(4) for j in range(6) if mask[i, j]]
    assert statistics.fmean(valid_out) == pytest.approx(0.0, abs=1e-6)
    assert statistics.stdev(valid_out) == pytest.approx(1.0, abs=1e-6)  # Bessel-corrected, like the code
    assert (out[~mask] == 0).all()
    # Whole batch, not per row: rows keep their offsets relative to each other.
    assert out[0, mask[0]].mean() < 0 < out[3, mask[3]].mean()
    # Hand check of one entry.
    valid_in = [values[i, j].item() for i in range(4) for j in range(6) if mask[i, j]]
    mean, std = statistics.fmean(valid_in), statistics.stdev(valid_in)
    assert out[2, 1].item() == pytest.approx((values[2, 1].item() - mean) / std, rel=1e-5)


def test_masked_whiten_without_mean_shift_keeps_the_mean() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out = masked_whiten(values, mask, shift_mean=False)
    valid = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, std = statistics.fmean(valid), statistics.stdev(valid)
    expected = [
        [(v - mean) / std + mean for v in [1.0, 2.0, 3.0]] + [0.0],
        [(v - mean) / std + mean for v in [4.0, 5.0]] + [0.0, 0.0],
    ]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 valid"):
        masked_whiten(values, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))


def test_place_reward_on_last_token() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    out = place_reward_on_last_token(torch.tensor([1.0, 2.0, 3.0]), mask)
    assert out.tolist() == [[0, 0, 1, 0], [2, 0, 0, 0], [0, 0, 0, 3]]
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        place_reward_on_last_token(torch.tensor([1.0, 2.0]), torch.tensor([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="scores must be"):
        place_reward_on_last_token(torch.tensor([1.0, 2.0]), mask)


def test_compute_token_rewards_kl_in_reward() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, -0.5, 7.0]])
    out = compute_token_rewards(torch.tensor([2.0, -1.0]), kl, kl_coef=0.5, mask=mask)
    expected = [[-0.05, -0.1, -0.15 + 2.0], [-0.2, 0.25 - 1.0, 0.0]]
    assert torch.allclose(out, torch.tensor(expected), atol=1e-7)
    with pytest.raises(ValueError, match="kl_coef"):
        compute_token_rewards(torch.tensor([2.0, -1.0]), kl, kl_coef=-0.1, mask=mask)


def test_apply_truncation_modes() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0])
    truncated = torch.tensor([False, True, False])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]])
    none = apply_truncation(scores, truncated, "none", 5.0, mask)
    assert none.scores.tolist() == [1.0, 2.0, 3.0] and torch.equal(none.loss_mask, mask)
    pen = apply_truncation(scores, truncated, "penalty", 5.0, mask)
    assert pen.scores.tolist() == [1.0, -3.0, 3.0] and torch.equal(pen.loss_mask, mask)
    masked = apply_truncation(scores, truncated, "mask", 5.0, mask)
    assert masked.scores.tolist() == [1.0, 2.0, 3.0]
    assert masked.loss_mask.tolist() == [[1, 1], [0, 0], [1, 0]]
    assert scores.tolist() == [1.0, 2.0, 3.0] and mask[1].tolist() == [1, 1]  # inputs untouched
    with pytest.raises(ValueError, match="unknown truncation mode"):
        apply_truncation(scores, truncated, "drop", 0.0, mask)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool"):
        apply_truncation(scores, truncated.long(), "mask", 0.0, mask)
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        apply_truncation(scores, truncated, "penalty", -1.0, mask)


# ---- GAE --------------------------------------------------------------------------------------------


def test_gae_hand_example() -> None:
    # gamma = 0.9, lam = 0.8 on one 3-token episode, reward 1 at the end:
    # delta_2 = 1 - 0.7 = 0.3;           A_2 = 0.3
    # delta_1 = 0.9 * 0.7 - 0.6 = 0.03;  A_1 = 0.03 + 0.72 * 0.3 = 0.246
    # delta_0 = 0.9 * 0.6 - 0.5 = 0.04;  A_0 = 0.04 + 0.72 * 0.246 = 0.21712
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3), 0.9, 0.8)
    assert torch.allclose(adv, torch.tensor([[0.21712, 0.246, 0.3]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[0.71712, 0.846, 1.0]]), atol=1e-6)


def test_gae_with_gamma_lambda_one_is_monte_carlo() -> None:
    rewards = torch.tensor([[0.5, -1.0, 2.0, 0.25]])
    values = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    adv, ret = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    future = [1.75, 1.25, 2.25, 0.25]  # sums of rewards from t to the end
    assert torch.allclose(ret, torch.tensor([future]), atol=1e-6)
    assert torch.allclose(adv, torch.tensor([[f - v for f, v in zip(future, [0.1, 0.2, 0.3, 0.4])]]), atol=1e-6)


def test_gae_right_padding_matches_per_row_loop() -> None:
    gen = torch.Generator().manual_seed(2)
    lengths = [5, 2, 1, 4]
    rewards = torch.randn(4, 5, generator=gen)
    values = torch.randn(4, 5, generator=gen)
    mask = torch.tensor([[1] * n + [0] * (5 - n) for n in lengths])
    # Garbage on padding must not matter: the critic's output there is ignored and the value after EOS is 0.
    rewards_padded = torch.where(mask.bool(), rewards, torch.full_like(rewards, 99.0))
    values_padded = torch.where(mask.bool(), values, torch.full_like(values, -42.0))
    adv, ret = gae(rewards_padded, values_padded, mask, gamma=0.99, lam=0.95)
    for i, n in enumerate(lengths):
        expected = _gae_loop(rewards[i, :n].tolist(), values[i, :n].tolist(), 0.99, 0.95)
        assert adv[i, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert ret[i, :n].tolist() == pytest.approx([a + v for a, v in zip(expected, values[i, :n].tolist())], abs=1e-5)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()


def test_gae_rejects_bad_arguments() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="lam"):
        gae(x, x, torch.ones(2, 3), gamma=1.0, lam=1.5)
    with pytest.raises(ValueError, match="values has shape"):
        gae(x, torch.zeros(2, 4), torch.ones(2, 3))


# ---- GRPO / RLOO ------------------------------------------------------------------------------------


def test_grpo_hand_values_and_identical_group() -> None:
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    mask = torch.tensor([[1, 1, 0]] * 8)
    adv = grpo_advantages(scores, mask, group_size=4, eps=1e-6)
    # Group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3).
    std = math.sqrt(1.0 / 3.0)
    a = 0.5 / (std + 1e-6)
    assert adv[:4, 0].tolist() == pytest.approx([a, -a, -a, a], rel=1e-6)
    # Group 1: identical rewards -> exactly 0, no NaN.
    assert torch.equal(adv[4:], torch.zeros(4, 3))
    assert torch.isfinite(adv).all()
    assert (adv[:, 2] == 0).all()  # masked tokens
    assert torch.equal(adv[:, 0], adv[:, 1])  # same advantage on every token of a response


def test_grpo_without_std_is_dr_grpo() -> None:
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0])
    adv = grpo_advantages(scores, torch.ones(4, 2), group_size=4, std_normalise=False)
    assert adv[:, 0].tolist() == [0.5, -0.5, -0.5, 0.5]


def test_grpo_identical_rewards_give_exact_zeros_despite_rounding() -> None:
    # In fp32, sum-then-divide gives mean(5 x 123.456) != 123.456; (r - mean) / (std + eps) on that
    # residue is about 0.8, a spurious advantage of the size of a real one. It must be exactly 0.
    scores = torch.full((10,), 123.456, dtype=torch.float32)
    adv = grpo_advantages(scores, torch.ones(10, 3), group_size=5, eps=1e-6)
    assert torch.equal(adv, torch.zeros(10, 3))
    mean, std = group_mean_std(scores, group_size=5)
    assert torch.equal(std, torch.zeros(10)) and torch.allclose(mean, scores)
    # fp64 scores: the fp64 mean of 5 x 123.456 is off by ~1e-14 and so is the std; with eps=0 their ratio
    # would be O(1). Constant groups are detected and set to 0 instead.
    scores64 = torch.full((5,), 123.456, dtype=torch.float64)
    assert torch.equal(grpo_advantages(scores64, torch.ones(5, 2), group_size=5, eps=0.0), torch.zeros(5, 2))


def test_grpo_group_ids_match_group_size() -> None:
    scores = torch.tensor([3.0, 1.0, 0.0, 4.0, 2.0, 8.0])
    ids = torch.tensor([7, 2, 7, 2, 7, 2])  # interleaved groups {0, 2, 4} and {1, 3, 5}
    adv = grpo_advantages(scores, torch.ones(6, 1), group_ids=ids)
    order = [0, 2, 4, 1, 3, 5]
    reordered = grpo_advantages(scores[order], torch.ones(6, 1), group_size=3)
    assert torch.allclose(adv[order], reordered, atol=1e-7)
    # Hand check of group {3, 0, 2}: mean 5/3, unbiased std sqrt(((4/3)^2 + (5/3)^2 + (1/3)^2) / 2).
    std = math.sqrt(((4 / 3) ** 2 + (5 / 3) ** 2 + (1 / 3) ** 2) / 2)
    assert adv[0, 0].item() == pytest.approx((3 - 5 / 3) / (std + 1e-6), rel=1e-6)


def test_group_errors() -> None:
    scores = torch.arange(6, dtype=torch.float32)
    mask = torch.ones(6, 2)
    with pytest.raises(ValueError, match="not a multiple of group_size 4"):
        grpo_advantages(scores, mask, group_size=4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        grpo_advantages(scores, mask, group_size=1)
    with pytest.raises(ValueError, match="exactly one of"):
        grpo_advantages(scores, mask)
    with pytest.raises(ValueError, match="exactly one of"):
        grpo_advantages(scores, mask, group_size=2, group_ids=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"groups \[5\] have a single response"):
        rloo_advantages(scores, mask, group_ids=torch.tensor([1, 1, 2, 2, 2, 5]))
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        rloo_advantages(scores, mask, group_size=1)
    with pytest.raises(ValueError, match="not a multiple"):
        rloo_advantages(scores, mask, group_size=4)
    with pytest.raises(ValueError, match="NaN or inf"):
        grpo_advantages(torch.tensor([1.0, float("nan")]), torch.ones(2, 1), group_size=2)
    with pytest.raises(ValueError, match="B=6"):
        rloo_advantages(scores[:4], mask, group_size=2)


def test_rloo_leave_one_out_baseline() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [1, 0]])
    adv = rloo_advantages(scores, mask, group_size=3)
    # Group (1, 2, 3): baselines (2+3)/2, (1+3)/2, (1+2)/2. Group (6, 5, 5): 5, 5.5, 5.5.
    expected = [1 - 2.5, 2 - 2.0, 3 - 1.5, 6 - 5.0, 5 - 5.5, 5 - 5.5]
    assert adv[:, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert adv[1, 1].item() == 0.0 and adv[5, 1].item() == 0.0
    same = rloo_advantages(torch.full((4,), 0.3), torch.ones(4, 1), group_size=2)
    assert torch.equal(same, torch.zeros(4, 1))


# ---- REINFORCE++ ------------------------------------------------------------------------------------


def test_reinforce_pp_returns_and_whitening() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 50.0]])  # 50 sits on padding and must be ignored
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = reinforce_pp_advantages(rewards, mask, gamma=1.0)
    assert ret.tolist() == [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]]
    # Valid returns [1, 1, 1, 2, 2]: mean 1.4, unbiased var (3 * 0.16 + 2 * 0.36) / 4 = 0.3.
    std = math.sqrt(0.3)
    low, high = (1 - 1.4) / std, (2 - 1.4) / std
    assert torch.allclose(adv, torch.tensor([[low, low, low], [high, high, 0.0]]), atol=1e-5)

    _, ret_discounted = reinforce_pp_advantages(rewards, mask, gamma=0.5)
    assert ret_discounted.tolist() == [[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]]


def test_reinforce_pp_with_kl_in_reward_matches_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    lengths = [4, 2, 3]
    mask = torch.tensor([[1] * n + [0] * (4 - n) for n in lengths])
    kl = torch.rand(3, 4, generator=gen)
    token_rewards = compute_token_rewards(torch.tensor([1.0, -2.0, 0.5]), kl, 0.1, mask)
    adv, ret = reinforce_pp_advantages(token_rewards, mask, gamma=0.9)
    flat = []
    for i, n in enumerate(lengths):
        running, row = 0.0, [0.0] * n
        for t in reversed(range(n)):
            running = token_rewards[i, t].item() + 0.9 * running
            row[t] = running
        assert ret[i, :n].tolist() == pytest.approx(row, abs=1e-6)
        flat.extend(row)
    mean, std = statistics.fmean(flat), statistics.stdev(flat)
    for i, n in enumerate(lengths):
        assert adv[i, :n].tolist() == pytest.approx([(g - mean) / std for g in ret[i, :n].tolist()], abs=1e-5)


# ---------------------------------------------------------------- reward normalisation and the dispatcher


def test_normalise_rewards_uses_stored_stats_then_clips() -> None:
    raw = torch.tensor([3.0, -1.0, 103.0])
    assert normalise_rewards(raw, mean=1.0, std=2.0, clip=10.0).tolist() == [1.0, -1.0, 10.0]
    assert normalise_rewards(raw, mean=1.0, std=2.0, clip=None).tolist() == [1.0, -1.0, 51.0]
    assert normalise_rewards(raw, None, None, clip=2.0).tolist() == [2.0, -1.0, 2.0]
    assert normalise_rewards(raw, None, None, clip=None).tolist() == raw.tolist()
    with pytest.raises(ValueError, match="or neither"):
        normalise_rewards(raw, mean=1.0, std=None, clip=None)
    with pytest.raises(ValueError, match="std must be > 0"):
        normalise_rewards(raw, mean=1.0, std=0.0, clip=None)


def _advantages(name, scores, kl, beta=0.0, kl_in_reward=False, values=None, group=2, **kw):
    mask = torch.ones_like(kl)
    return compute_advantages(name, scores, kl, beta, kl_in_reward, mask, mask, group, values, **kw)


def test_gae_dispatch_puts_kl_on_tokens_and_the_score_last() -> None:
    kl = torch.tensor([[0.2, 0.2]])
    adv, returns = _advantages("gae", torch.tensor([1.0]), kl, beta=0.5, kl_in_reward=True,
                               values=torch.zeros(1, 2), gamma=1.0, lam=1.0, whiten=False)
    # token rewards [-0.1, 1 - 0.1]; with V = 0 and gamma = lam = 1 the advantage is the reward-to-go
    assert torch.allclose(adv, torch.tensor([[0.8, 0.9]]))
    assert torch.allclose(returns, adv)
    # KL in the loss: the rewards carry no KL whatever the coefficient
    adv_loss, _ = _advantages("gae", torch.tensor([1.0]), kl, beta=0.5, kl_in_reward=False,
                              values=torch.zeros(1, 2), gamma=1.0, lam=1.0, whiten=False)
    assert torch.allclose(adv_loss, torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ValueError, match="GAE needs the critic's values"):
        _advantages("gae", torch.tensor([1.0]), kl)


def test_gae_dispatch_whitens_over_the_loss_mask() -> None:
    scores, kl, values = torch.tensor([1.0, 0.0, 3.0]), torch.zeros(3, 2), torch.zeros(3, 2)
    mask = torch.ones(3, 2)
    loss_mask = mask.clone()
    loss_mask[2] = 0  # a truncated reply masked out of the loss: it takes no part in the statistics
    adv, _ = compute_advantages("gae", scores, kl, 0.0, False, mask, loss_mask, 1, values, 1.0, 1.0, True)
    raw, _ = gae(compute_token_rewards(scores, kl, 0.0, mask), values, mask, 1.0, 1.0)
    assert torch.allclose(adv, masked_whiten(raw, loss_mask))
    assert adv[2].abs().sum() == 0


def test_group_estimators_by_hand() -> None:
    scores = torch.tensor([1.0, 0.0, 0.5, 0.5])
    kl = torch.zeros(4, 3)
    grpo, _ = _advantages("grpo", scores, kl)
    assert torch.allclose(grpo[:, 0], torch.tensor([math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0]), atol=1e-5)
    dr_grpo, _ = _advantages("grpo", scores, kl, std_normalise=False)
    assert torch.allclose(dr_grpo[:, 0], torch.tensor([0.5, -0.5, 0.0, 0.0]))
    rloo, returns = _advantages("rloo", scores, kl)
    assert rloo[:, 0].tolist() == [1.0, -1.0, 0.0, 0.0] and returns is None
    # sequence-level KL in the reward: sample 2 pays 0.5 * (3 * 0.2) = 0.3 against its twin
    kl_third = torch.zeros(4, 3)
    kl_third[2] = 0.2
    rloo_kl, _ = _advantages("rloo", scores, kl_third, beta=0.5, kl_in_reward=True)
    assert torch.allclose(rloo_kl[:, 0], torch.tensor([1.0, -1.0, -0.3, 0.3]))
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        _advantages("ppo", scores, kl)


def test_reinforce_pp_dispatch_whitens_returns_over_the_batch() -> None:
    adv, _ = _advantages("reinforce_pp", torch.tensor([1.0, 0.0]), torch.zeros(2, 2))
    # returns [[1, 1], [0, 0]] -> mean 0.5, Bessel std sqrt(1/3)
    expected = (torch.tensor([[1.0, 1.0], [0.0, 0.0]]) - 0.5) / math.sqrt(1 / 3)
    assert torch.allclose(adv, expected, atol=1e-4)


# ---- padding ----------------------------------------------------------------------------------------

_PAD_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]])


def _every_masked_output(x: torch.Tensor, values: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of every masked reduction and advantage estimator on token inputs ``[4, 4]``."""
    mask, scores = _PAD_MASK, torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    loss_mask = mask.clone()
    loss_mask[3] = 0  # a truncated reply, masked out of the loss
    out = {
        "masked_sum": masked_sum(x, mask),
        "masked_sum_rows": masked_sum(x, mask, dim=1),
        "masked_mean": masked_mean(x, mask),
        "masked_mean_rows": masked_mean(x, mask, dim=1),
        "masked_var": masked_var(x, mask),
        "masked_whiten": masked_whiten(x, mask),
        "masked_whiten_scale_only": masked_whiten(x, mask, shift_mean=False),
        "token_rewards": compute_token_rewards(scores, kl, 0.1, mask),
        "reinforce_pp": reinforce_pp_advantages(x, mask, gamma=0.9)[0],
    }
    out["gae_advantages"], out["gae_returns"] = gae(x, values, mask, gamma=0.99, lam=0.95)
    for name in ("gae", "reinforce_pp", "grpo", "rloo"):
        adv, returns = compute_advantages(name, scores, kl, 0.1, True, mask, loss_mask, 2, values)
        out[f"compute_advantages_{name}"] = adv
        if returns is not None:
            out[f"compute_advantages_{name}_returns"] = returns
    return out


@pytest.mark.parametrize("fill", [math.nan, math.inf, -math.inf])
def test_advantages_and_masked_reductions_ignore_whatever_padding_holds(fill: float) -> None:
    gen = torch.Generator().manual_seed(10)
    x, values, kl = (torch.randn(4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    keep = _PAD_MASK.to(torch.bool)
    expected = _every_masked_output(*(torch.where(keep, t, 0.0) for t in (x, values, kl)))
    got = _every_masked_output(*(torch.where(keep, t, fill) for t in (x, values, kl)))
    assert got.keys() == expected.keys()
    broken = [name for name in got if not (torch.isfinite(got[name]).all() and torch.equal(got[name], expected[name]))]
    assert not broken, f"padding leaks into {broken}"
