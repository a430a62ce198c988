"""Rankings to pairs and annotation quality: hand-computed cases and simulated annotator populations."""

from __future__ import annotations

import random

import pytest

from rlhf.preferences.aggregate import aggregate_record, vote_shares
from rlhf.preferences.quality import kendalls_w, krippendorff_alpha_interval, quality_report
from rlhf.preferences.votes import RankingVote, pair_outcomes


def vote(annotator, ranks, record="r1", slots=(), honeypot=False):
    return RankingVote(record_id=record, prompt_id="p-" + record, annotator=annotator, ranks=ranks,
                       slots=tuple(slots), honeypot=honeypot)


def test_pair_outcomes_from_a_ranking_with_ties():
    out = {(p.a, p.b): p.outcome for p in pair_outcomes({"x": 2, "y": 1, "z": 2})}
    assert out == {("x", "y"): -1, ("x", "z"): 0, ("y", "z"): 1}


def test_vote_validation():
    with pytest.raises(ValueError, match="fewer than 2"):
        vote("a", {"x": 1})
    with pytest.raises(ValueError, match="slots and ranked candidates differ"):
        vote("a", {"x": 1, "y": 2}, slots=("x", "q"))


def test_majority_agreement_and_tie_handling():
    votes = [vote("a", {"x": 1, "y": 2}), vote("b", {"x": 1, "y": 2}), vote("c", {"x": 2, "y": 1})]
    (pair,) = aggregate_record(votes, "majority")
    assert (pair.chosen, pair.rejected) == ("x", "y")
    assert pair.agreement == pytest.approx(2 / 3) and pair.margin == pytest.approx(1 / 3) and pair.votes == 3
    split = [vote("a", {"x": 1, "y": 2}), vote("b", {"x": 2, "y": 1})]
    assert aggregate_record(split, "majority") == []  # 0.5 agreement: dropped
    tie = [vote("a", {"x": 1, "y": 1}), vote("b", {"x": 1, "y": 1})]
    assert aggregate_record(tie, "majority") == []  # ties never become pairs
    assert vote_shares(tie)[("x", "y")] == (0.5, 2)


@pytest.mark.parametrize("method", ["majority", "borda", "bradley_terry"])
def test_methods_recover_a_consensus_order(method):
    truth = {"a": 1, "b": 2, "c": 3, "d": 4}
    votes = [vote(f"ann{i}", truth) for i in range(3)] + [vote("odd", {"a": 2, "b": 1, "c": 3, "d": 4})]
    pairs = aggregate_record(votes, method)
    assert {(p.chosen, p.rejected) for p in pairs} == {(x, y) for x in truth for y in truth if truth[x] < truth[y]}
    ab = next(p for p in pairs if {p.chosen, p.rejected} == {"a", "b"})
    assert ab.agreement == pytest.approx(0.75)
    assert all(p.margin > 0 for p in pairs)


def test_bradley_terry_margin_grows_with_evidence():
    weak = aggregate_record([vote("a", {"x": 1, "y": 2}), vote("b", {"x": 2, "y": 1}), vote("c", {"x": 1, "y": 2})],
                            "bradley_terry")
    strong = aggregate_record([vote(n, {"x": 1, "y": 2}) for n in "abc"], "bradley_terry")
    assert strong[0].margin > weak[0].margin > 0


def test_kendalls_w_extremes_and_hand_value():
    assert kendalls_w([{"a": 1, "b": 2, "c": 3}] * 3) == pytest.approx(1.0)
    assert kendalls_w([{"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}]) == pytest.approx(0.0)
    # m=2, k=3: totals (1+2, 2+1, 3+3) = (3, 3, 6), mean 4, S = 1+1+4 = 6, W = 12*6 / (4*24) = 0.75
    assert kendalls_w([{"a": 1, "b": 2, "c": 3}, {"a": 2, "b": 1, "c": 3}]) == pytest.approx(0.75)
    assert kendalls_w([{"a": 1, "b": 2}] * 3) is None


def test_krippendorff_alpha_hand_values():
    perfect = {u: {"c1": float(v), "c2": float(v)} for u, v in enumerate([1, 2, 3, 4])}
    assert krippendorff_alpha_interval(perfect) == pytest.approx(1.0)
    # Two units, two coders: (1, 2) and (2, 1). D_o = (2+2)/4 = 1; all values 1,2,2,1: D_e = 8/12 -> alpha = -0.5
    assert krippendorff_alpha_interval({0: {"a": 1, "b": 2}, 1: {"a": 2, "b": 1}}) == pytest.approx(-0.5)
    assert krippendorff_alpha_interval({0: {"a": 1}}) is None


def _simulate(seed=0, records=120, k=4):
    """Three honest annotators, one careless (random), one always preferring slot A."""
    rng = random.Random(seed)
    votes = []
    for r in range(records):
        cands = [f"c{r}_{i}" for i in range(k)]
        truth = {c: i + 1 for i, c in enumerate(cands)}
        for name in ("h1", "h2", "h3", "careless", "biased"):
            slots = cands[:]
            rng.shuffle(slots)
            if name == "careless":
                order = slots[:]
                rng.shuffle(order)
            elif name == "biased":
                order = slots[:]  # slot order is its ranking
            else:
                order = sorted(cands, key=lambda c: truth[c] + rng.gauss(0, 0.6))
            votes.append(vote(name, {c: i + 1 for i, c in enumerate(order)}, record=f"r{r}", slots=slots))
    return votes


def test_quality_report_flags_careless_and_biased_annotators():
    report = quality_report(_simulate())
    assert "careless" in report.flagged("careless")
    assert "biased" in report.flagged("position_bias")
    assert not set(report.flagged("position_bias")) & {"h1", "h2", "h3"}
    assert not set(report.flagged("careless")) & {"h1", "h2", "h3"}
    biased = next(a for a in report.per_annotator if a.annotator == "biased")
    assert biased.slot_a_rate == 1.0 and biased.slot_a_p_value < 1e-6
    assert 0 < report.pairwise_agreement < 1 and report.overlap == 5
    assert report.kendalls_w is not None and report.krippendorff_alpha is not None


def test_honest_population_agrees_more_than_mixed():
    honest = [v for v in _simulate() if v.annotator.startswith("h")]
    assert quality_report(honest).krippendorff_alpha > quality_report(_simulate()).krippendorff_alpha


def test_honeypot_accuracy():
    answers = {"hp": {"x": 1, "y": 2, "z": 3}}
    votes = [vote("good", {"x": 1, "y": 2, "z": 3}, record="hp"), vote("bad", {"x": 3, "y": 2, "z": 1}, record="hp")]
    report = quality_report(votes, honeypot_answers=answers)
    acc = {a.annotator: a.honeypot_accuracy for a in report.per_annotator}
    assert acc == {"bad": 0.0, "good": 1.0}
    assert report.flagged("careless") == ["bad"]


def test_each_flag_comes_with_the_measure_its_value_and_the_threshold():
    report = quality_report(_simulate(), bias_p=0.01, careless_agreement=0.6, honeypot_accuracy=0.7)
    assert report.thresholds == {"bias_p": 0.01, "careless_agreement": 0.6, "honeypot_accuracy": 0.7}
    by_name = {a.annotator: a for a in report.per_annotator}
    (bias,) = [r for r in by_name["biased"].reasons if r.flag == "position_bias"]
    assert (bias.flag, bias.measure, bias.threshold_name, bias.threshold) == ("position_bias", "slot_a_p_value",
                                                                              "bias_p", 0.01)
    assert bias.value == by_name["biased"].slot_a_p_value < 0.01
    careless = [r for r in by_name["careless"].reasons if r.flag == "careless"]
    assert [(r.measure, r.threshold_name, r.threshold) for r in careless] == [("loo_agreement", "careless_agreement", 0.6)]
    assert careless[0].value == by_name["careless"].loo_agreement < 0.6
    for a in report.per_annotator:  # flags are exactly the flags of the reasons
        assert a.flags == list(dict.fromkeys(r.flag for r in a.reasons))
    answers = {"hp": {"x": 1, "y": 2, "z": 3}}
    bad = quality_report([vote("bad", {"x": 3, "y": 2, "z": 1}, record="hp")], honeypot_answers=answers)
    assert [(r.flag, r.measure, r.value, r.threshold) for r in bad.per_annotator[0].reasons] == [
        ("careless", "honeypot_accuracy", 0.0, 0.7)]
    assert bad.to_dict()["per_annotator"][0]["reasons"][0]["threshold_name"] == "honeypot_accuracy"
