"""Evaluation statistics: win rates and intervals against known binomial cases, length control, KL,
best-of-n, blind A/B merging, and the `evaluate` modules that wrap them (loaded by path, offline)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from rlhf.eval.analysis import default_metrics_dir
from rlhf.eval.divergence import best_of_n_curve, best_of_n_kl_bound, sequence_kl
from rlhf.eval.human import HumanVote, build_blind_items, merge_votes, vote_outcome
from rlhf.eval.length_control import fit_length_glm, length_controlled_win_rate
from rlhf.eval.stats import (
    bootstrap_interval,
    clopper_pearson_interval,
    compare_scores,
    pairwise_outcomes,
    summarise_outcomes,
    wilson_interval,
    win_rate,
)

METRICS = default_metrics_dir()  # package data: rlhf/eval/metrics


# --- intervals against known binomial cases -------------------------------------------------------------

def test_clopper_pearson_matches_the_textbook_case():
    # 7 successes in 10 trials: the exact 95 % interval is 0.3475 to 0.9333 (Clopper & Pearson 1934 tables).
    ci = clopper_pearson_interval(7, 10)
    assert ci.low == pytest.approx(0.3475, abs=1e-4)
    assert ci.high == pytest.approx(0.9333, abs=1e-4)
    ref = sps.binomtest(7, 10).proportion_ci(confidence_level=0.95, method="exact")
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_clopper_pearson_edges_and_wilson():
    zero = clopper_pearson_interval(0, 10)
    assert zero.low == 0.0 and zero.high == pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9)
    full = clopper_pearson_interval(10, 10)
    assert full.high == 1.0 and full.low == pytest.approx(0.025 ** (1 / 10), abs=1e-9)
    wilson = wilson_interval(7, 10)
    assert (wilson.low, wilson.high) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(11, 10)


def test_bootstrap_width_at_n500_is_about_4_4_points():
    outcomes = np.array([1.0, 0.0] * 250)
    result = summarise_outcomes(outcomes, n_boot=4000, seed=1)
    half_width = (result.bootstrap.high - result.bootstrap.low) / 2
    assert half_width == pytest.approx(0.044, abs=0.004)
    assert result.wilson.contains(0.5) and result.clopper_pearson.contains(0.5)
    assert result.p_value > 0.9


# --- win rates -----------------------------------------------------------------------------------------

def test_ties_count_half_and_tolerance():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [0.0, 2.0, 5.0, 3.99]
    assert pairwise_outcomes(a, b).tolist() == [1.0, 0.5, 0.0, 1.0]
    assert pairwise_outcomes(a, b, tie_tolerance=0.05).tolist() == [1.0, 0.5, 0.0, 0.5]
    assert win_rate(pairwise_outcomes(a, b)) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="compare the same prompts"):
        pairwise_outcomes([1.0], [1.0, 2.0])


def test_checkpoint_against_itself_is_fifty_percent():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=300)
    same = compare_scores(scores, scores.copy(), n_boot=500)
    assert same.win_rate == 0.5 and same.ties == 300
    assert same.bootstrap.contains(0.5) and same.wilson.contains(0.5) and same.clopper_pearson.contains(0.5)
    # Two independent sample sets from one policy: about 50 %, and the interval covers it.
    other = compare_scores(rng.normal(size=300), rng.normal(size=300), n_boot=1000, seed=3)
    assert abs(other.win_rate - 0.5) < 0.08
    assert other.bootstrap.contains(0.5)


def test_better_policy_wins_and_interval_excludes_half():
    rng = np.random.default_rng(1)
    base = rng.normal(size=400)
    better = base + rng.normal(0.5, 1.0, size=400)
    result = compare_scores(better, base, n_boot=1000)
    assert result.win_rate > 0.6
    assert result.bootstrap.low > 0.5 and result.p_value < 1e-3
    assert result.wins + result.ties + result.losses == 400


def test_cluster_bootstrap_is_wider_for_correlated_samples():
    # Each prompt's 4 samples share one outcome: the effective sample size is the number of prompts.
    per_prompt = np.repeat(np.array([1.0, 0.0] * 50), 4)
    groups = np.repeat(np.arange(100), 4)
    iid = bootstrap_interval(lambda idx: float(per_prompt[idx].mean()), 400, n_boot=2000, seed=0)
    clustered = bootstrap_interval(lambda idx: float(per_prompt[idx].mean()), 400, n_boot=2000, seed=0,
                                   groups=groups)
    assert (clustered.high - clustered.low) > 1.6 * (iid.high - iid.low)


# --- length control -------------------------------------------------------------------------------------

def test_length_controlled_win_rate_removes_a_pure_length_effect():
    # Over 40 seeds this setting gives a mean LC of 0.502 (sd 0.025) and about 93 % interval coverage.
    rng = np.random.default_rng(12)
    diff = rng.normal(30, 40, size=1000)  # the policy is usually longer
    p = 1 / (1 + np.exp(-2.0 * np.tanh(diff / diff.std())))  # wins come only from length
    outcomes = (rng.random(1000) < p).astype(float)
    result = length_controlled_win_rate(outcomes, diff, n_boot=400)
    assert result.raw_win_rate > 0.6
    assert abs(result.lc_win_rate - 0.5) < 0.07
    assert result.interval.contains(0.5)
    assert result.phi > 1.0


def test_length_controlled_equals_raw_without_length_differences():
    outcomes = np.array([1.0, 1.0, 0.0, 0.5] * 25)
    result = length_controlled_win_rate(outcomes, np.zeros(100), n_boot=200)
    assert result.sigma == 0.0
    assert result.lc_win_rate == pytest.approx(outcomes.mean(), abs=2e-3)


def test_glm_fit_matches_a_generic_optimiser():
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    x = np.tanh(rng.normal(size=200))
    y = np.clip(np.round(rng.random(200) * 2) / 2, 0, 1)  # outcomes in {0, 0.5, 1}
    theta, phi = fit_length_glm(y, x, ridge=1e-3)

    def loss(w):
        z = w[0] + w[1] * x
        return np.sum(np.logaddexp(0, z) - y * z) + 1e-3 / 2 * (w @ w)

    ref = minimize(loss, [0.0, 0.0], method="BFGS").x
    assert (theta[0], phi[0]) == pytest.approx(tuple(ref), abs=1e-4)


# --- KL and best-of-n ----------------------------------------------------------------------------------

def test_sequence_kl_is_unbiased_for_a_known_pair_of_distributions():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.3, 0.5])
    true_kl = float(np.sum(p * np.log(p / q)))
    rng = np.random.default_rng(4)
    y = rng.choice(3, size=20000, p=p)
    est = sequence_kl(np.log(p[y]), np.log(q[y]), lengths=np.full(y.size, 2))
    assert abs(est.kl - true_kl) < 4 * est.stderr
    assert est.kl_per_token == pytest.approx(est.kl / 2)
    assert sequence_kl([-1.0, -2.0], [-1.0, -2.0]).kl == 0.0
    with pytest.raises(ValueError, match="finite"):
        sequence_kl([-1.0], [-math.inf])


def test_best_of_n_expectation_matches_enumeration():
    rng = np.random.default_rng(5)
    proxy = rng.normal(size=(3, 6))
    gold = rng.normal(size=(3, 6))
    curve = best_of_n_curve(proxy, gold, ns=[1, 2, 3, 6])
    for k, n in enumerate(curve.n):
        brute_proxy, brute_gold = [], []
        for row in range(3):
            picks = [max(sub, key=lambda j: proxy[row, j]) for sub in itertools.combinations(range(6), n)]
            brute_proxy.append(np.mean([proxy[row, j] for j in picks]))
            brute_gold.append(np.mean([gold[row, j] for j in picks]))
        assert curve.proxy[k] == pytest.approx(np.mean(brute_proxy))
        assert curve.gold[k] == pytest.approx(np.mean(brute_gold))
    assert curve.proxy == sorted(curve.proxy)
    assert best_of_n_kl_bound(1) == 0.0 and best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError, match="outside"):
        best_of_n_curve(proxy, ns=[7])


# --- blind A/B ------------------------------------------------------------------------------------------

def _items(n: int = 41, identical: int = 3):
    prompts = [f"prompt {i}" for i in range(n)]
    a = [f"reply a{i}" for i in range(n)]
    b = [f"reply b{i}" if i >= identical else f"reply a{i}" for i in range(n)]
    return build_blind_items(prompts, a, b, "new", "old", seed=7)


def test_blind_items_balance_slots_and_mark_identical_pairs():
    items = _items()
    shown = [it for it in items if not it.auto_tie]
    assert sum(it.auto_tie for it in items) == 3
    first = sum(it.a_slot == 1 for it in shown)
    assert first in (len(shown) // 2, (len(shown) + 1) // 2)
    for it in shown:
        assert it.slots[it.a_slot - 1] == it.reply_a and it.slots[2 - it.a_slot] == it.reply_b
    assert [it.item_id for it in _items()] == [it.item_id for it in items]  # deterministic
    assert [it.a_slot for it in _items()] == [it.a_slot for it in items]


def test_merge_votes_maps_slots_back_and_cancels_position_bias():
    items = _items()
    shown = [it for it in items if not it.auto_tie]
    votes = [HumanVote(it.item_id, "honest", str(it.a_slot)) for it in shown]  # always prefers A
    votes += [HumanVote(it.item_id, "slot-one", "1") for it in shown]  # always clicks Response 1
    result = merge_votes(items, votes, "new", "old", n_boot=500)
    assert result.per_annotator["honest"]["win_rate_a"] == 1.0
    assert result.per_annotator["slot-one"]["slot1_rate"] == 1.0
    assert abs(result.per_annotator["slot-one"]["win_rate_a"] - 0.5) <= 0.5 / len(shown) + 1e-9
    assert result.auto_ties == 3 and result.items_voted == len(shown) and result.annotators == 2
    assert 0.5 < result.win_rate < 1.0 and result.ci_low <= result.win_rate <= result.ci_high
    assert vote_outcome(shown[0], "tie") == 0.5
    with pytest.raises(ValueError, match="slot map"):
        merge_votes(items, [HumanVote("unknown", "x", "1")], "new", "old")


def test_human_win_rate_of_a_checkpoint_against_itself_is_half():
    prompts = [f"p{i}" for i in range(30)]
    replies = [f"r{i}" for i in range(30)]
    items = build_blind_items(prompts, replies, list(replies), "same", "same-copy", seed=0)
    result = merge_votes(items, [], "same", "same-copy", n_boot=300)
    assert result.win_rate == 0.5 and result.ci_low <= 0.5 <= result.ci_high and result.auto_ties == 30


# --- the evaluate modules --------------------------------------------------------------------------------

def test_evaluate_modules_load_by_path_and_agree_with_the_library():
    evaluate = pytest.importorskip("evaluate")
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=60), rng.normal(size=60)
    win = evaluate.load(str(METRICS / "win_rate"), keep_in_memory=True)
    got = win.compute(predictions=a, references=b, n_boot=300, seed=2)
    want = compare_scores(a, b, n_boot=300, seed=2)
    assert got["win_rate"] == want.win_rate and got["ci_low"] == want.bootstrap.low
    assert got["cp_high"] == want.clopper_pearson.high

    lc = evaluate.load(str(METRICS / "length_controlled_win_rate"), keep_in_memory=True)
    diff = rng.normal(size=60)
    got_lc = lc.compute(predictions=a, references=b, length_diff=diff, n_boot=200)
    assert got_lc["lc_win_rate"] == length_controlled_win_rate(pairwise_outcomes(a, b), diff, n_boot=200).lc_win_rate

    kl = evaluate.load(str(METRICS / "sequence_kl"), keep_in_memory=True)
    assert kl.compute(predictions=[-1.0, -3.0], references=[-2.0, -3.0])["kl"] == pytest.approx(0.5)

    bon = evaluate.load(str(METRICS / "best_of_n"), keep_in_memory=True)
    curve = bon.compute(predictions=[[0.0, 1.0], [2.0, 1.0]], references=[[0.0, 1.0], [1.0, 0.0]])
    assert curve["n"] == [1, 2] and curve["gold"] == pytest.approx([0.5, 1.0])
