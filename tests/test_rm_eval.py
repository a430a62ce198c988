"""Reward-model evaluation metrics, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhf.eval import rm_metrics as rm_eval


def test_pairwise_accuracy_counts_ties_half():
    assert rm_eval.pairwise_accuracy([2, 1, 0, 5], [1, 3, 0, 4]) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError, match="held-out split is empty"):
        rm_eval.pairwise_accuracy([], [])


def test_accuracy_by_agreement_buckets():
    rc = [1, 1, 0, 1, 0]
    rr = [0, 2, 1, 0, 1]
    agree = [0.6, 0.6, 0.8, 1.0, 1.0]
    out = rm_eval.accuracy_by_agreement(rc, rr, agree, edges=(0.5, 0.7, 0.9, 1.0))
    assert out == {"0.5-0.7": {"pairs": 2, "accuracy": 0.5}, "0.7-0.9": {"pairs": 1, "accuracy": 0.0},
                   "0.9-1": {"pairs": 2, "accuracy": 0.5}}
    with pytest.raises(ValueError, match="increasing"):
        rm_eval.accuracy_by_agreement(rc, rr, agree, edges=(1.0, 0.5))


def test_ece_hand_computed():
    probs = [0.05, 0.15, 0.95, 0.85]
    targets = [0.0, 0.0, 1.0, 0.0]
    # bins of width 0.5: [0.05, 0.15] -> |0.1 - 0|; [0.85, 0.95] -> |0.9 - 0.5|; each holds half the points
    assert rm_eval.expected_calibration_error(probs, targets, bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert rm_eval.expected_calibration_error([0.7, 0.7], [0.7, 0.7]) == pytest.approx(0.0)
    rows = rm_eval.calibration_bins(probs, targets, bins=2)
    assert [r["count"] for r in rows] == [2, 2] and rows[1]["observed"] == 0.5


def test_sigmoid_is_stable_and_symmetric():
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    y = rm_eval.sigmoid(x)
    assert np.all(np.isfinite(y)) and y[2] == 0.5
    assert y[1] + y[3] == pytest.approx(1.0) and y[0] == 0.0 and y[4] == 1.0


def test_pearson_and_constant_input():
    assert rm_eval.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert rm_eval.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(rm_eval.pearson([1, 1, 1], [1, 2, 3]))


def test_length_baseline_direction_is_fitted_on_train():
    direction, acc = rm_eval.length_baseline([1, 2, 1], [5, 6, 7], [3, 9], [4, 2])
    assert direction == "shorter" and acc == 0.5
    direction, acc = rm_eval.length_baseline([9, 9], [1, 1], [3, 9], [4, 2])
    assert direction == "longer" and acc == 0.5


def test_best_of_n_curve_on_a_known_pool():
    proxy = np.array([[0.1, 0.9, 0.5, 0.2]])
    gold = np.array([[1.0, 0.0, 0.5, 0.8]])
    rows = rm_eval.best_of_n_curve(proxy, gold, [1, 2, 4])
    assert rows[0] == {"n": 1, "gold": pytest.approx(2.3 / 4), "proxy": pytest.approx(1.7 / 4),
                       "gold_oracle": pytest.approx(2.3 / 4)}
    assert rows[1]["gold"] == pytest.approx((0.0 + 0.5) / 2) and rows[1]["gold_oracle"] == pytest.approx(0.9)
    assert rows[2] == {"n": 4, "gold": 0.0, "proxy": 0.9, "gold_oracle": 1.0}
    with pytest.raises(ValueError, match="must divide"):
        rm_eval.best_of_n_curve(proxy, gold, [3])


def test_best_of_n_with_an_aligned_proxy_raises_gold():
    rng = np.random.default_rng(0)
    gold = rng.random((200, 16))
    rows = rm_eval.best_of_n_curve(gold + 0.05 * rng.standard_normal(gold.shape), gold, [1, 4, 16])
    assert rows[0]["gold"] < rows[1]["gold"] < rows[2]["gold"]


def test_reward_stats():
    assert rm_eval.reward_stats([1.0, 3.0]) == {"mean": 2.0, "std": 1.0, "count": 2}


def test_both_orders_mirrors_each_pair():
    p, t = rm_eval.both_orders([0.9, 0.3], [1.0, 0.75])
    assert p.tolist() == pytest.approx([0.9, 0.3, 0.1, 0.7]) and t.tolist() == pytest.approx([1.0, 0.75, 0.0, 0.25])


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, 20000)
    # labels drawn from sigmoid(logits); the model reports 3x the logits (overconfident), so T should be 3
    labels = (rng.random(logits.size) < rm_eval.sigmoid(logits)).astype(float)
    assert rm_eval.fit_temperature(3.0 * logits, labels) == pytest.approx(3.0, rel=0.05)


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model_without_changing_accuracy():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 1.5, 4000)
    labels = (rng.random(logits.size) < rm_eval.sigmoid(logits)).astype(float)
    margins = 4.0 * logits
    groups = [f"prompt-{i // 4}" for i in range(logits.size)]
    before = rm_eval.expected_calibration_error(*rm_eval.both_orders(rm_eval.sigmoid(margins), labels))
    calibrated = rm_eval.cross_fitted_probs(margins, labels, groups)
    after = rm_eval.expected_calibration_error(*rm_eval.both_orders(calibrated, labels))
    assert before > 0.1 and after < 0.03
    assert np.array_equal(calibrated > 0.5, margins > 0)


def test_cross_fitted_probs_needs_two_groups():
    with pytest.raises(ValueError, match="at least 2 prompts"):
        rm_eval.cross_fitted_probs([1.0, 2.0], [1.0, 1.0], ["a", "a"])
