"""Scorer disagreement flags, reply drift and the best-policy rule (rlhf.eval.selection) on hand-built data."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from rlhf.eval.selection import (
    FLUENCY_COLUMN,
    best_policy,
    distinct_trigram_share,
    reply_drift,
    scorer_disagreements,
)

SETTINGS = {"tie_tolerance": 0.0, "n_boot": 400, "confidence": 0.95, "seed": 0}


def results(rates: dict[tuple[str, str], tuple[float, float, float]], scorers=("rm/rm-r1", "gold"),
            primary: str = "rm/rm-r1", policies=("ppo", "dpo")) -> dict:
    """A results.json dict: ``rates[(policy, scorer)] = (win_rate, ci_low, ci_high)`` against ``sft``."""
    return {"policies": ["sft", *policies], "baseline": "sft", "scorers": list(scorers), "primary": primary,
            "settings": SETTINGS,
            "comparisons": [{"policy": p, "baseline": "sft", "scorer": s, "win_rate": w, "ci_low": lo, "ci_high": hi}
                            for (p, s), (w, lo, hi) in rates.items()]}


def human(policy_a: str, policy_b: str, rate: float, low: float, high: float) -> dict:
    return {"policy_a": policy_a, "policy_b": policy_b, "win_rate": rate, "ci_low": low, "ci_high": high}


# --- scorer disagreement -------------------------------------------------------------------------------------

def test_disjoint_intervals_flag_the_reward_model_and_overlap_does_not():
    res = results({("ppo", "rm/rm-r1"): (0.86, 0.80, 0.91), ("ppo", "gold"): (0.66, 0.58, 0.75),
                   ("dpo", "rm/rm-r1"): (0.70, 0.62, 0.78), ("dpo", "gold"): (0.66, 0.58, 0.75)})
    (flag,) = scorer_disagreements(res)
    assert (flag.policy, flag.first.scorer, flag.second.scorer, flag.rule) == ("ppo", "rm/rm-r1", "gold",
                                                                                "disjoint intervals")
    assert flag.message().startswith("RM rm-r1 says ppo wins 86 % [80, 91]; gold says 66 % [58, 75]: "
                                     "the reward model overrates this policy")
    under = results({("ppo", "rm/rm-r1"): (0.40, 0.32, 0.48), ("ppo", "gold"): (0.66, 0.58, 0.75)}, policies=("ppo",))
    assert "underrates" in scorer_disagreements(under)[0].message()


def paired_samples(n: int, rm_wins: int, gold_wins: int, swapped: int = 0) -> pd.DataFrame:
    """``n`` prompts; the policy wins the first ``rm_wins`` under the RM and the first ``gold_wins`` under gold
    (gold's wins a subset of the RM's), except ``swapped`` pairs the RM loses and gold wins, and as many the
    RM wins and gold loses, at the end (noise in both directions)."""
    rows = []
    for i in range(n):
        rm = i < rm_wins or (n - 2 * swapped <= i < n - swapped)
        gold = i < gold_wins or i >= n - swapped
        for policy, rm_score, gold_score in (("ppo", float(rm), float(gold)), ("sft", 0.5, 0.5)):
            rows.append({"policy": policy, "prompt_index": i, "sample": 0, "score/rm/rm-r1": rm_score,
                         "score/gold": gold_score})
    return pd.DataFrame(rows)


def test_paired_rule_sees_what_overlapping_intervals_hide():
    # RM 75 % [64, 86], gold 60 % [48, 72]: the intervals overlap, but on every pair where they differ the RM
    # says win and gold says loss, so the paired difference (+15 points) excludes 0.
    res = results({("ppo", "rm/rm-r1"): (0.75, 0.64, 0.86), ("ppo", "gold"): (0.60, 0.48, 0.72)}, policies=("ppo",))
    samples = paired_samples(60, rm_wins=45, gold_wins=36)
    assert scorer_disagreements(res) == []
    (flag,) = scorer_disagreements(res, samples)
    assert flag.rule == "paired" and 0 < flag.diff_low < 0.15 < flag.diff_high
    assert "paired difference +15 points" in flag.message()


def test_paired_rule_stays_quiet_on_symmetric_noise():
    # The scorers differ on 10 pairs, 5 each way: the same win rate, the difference interval holds 0.
    res = results({("ppo", "rm/rm-r1"): (0.5, 0.37, 0.63), ("ppo", "gold"): (0.5, 0.37, 0.63)}, policies=("ppo",))
    samples = paired_samples(60, rm_wins=25, gold_wins=25, swapped=5)
    assert samples.query("policy == 'ppo'")["score/rm/rm-r1"].sum() == samples.query("policy == 'ppo'")["score/gold"].sum()
    assert scorer_disagreements(res, samples) == []


def test_human_results_join_either_way_round_by_interval_rule():
    res = results({("ppo", "rm/rm-r1"): (0.86, 0.80, 0.91), ("ppo", "gold"): (0.80, 0.72, 0.88)}, policies=("ppo",))
    people = [human("sft", "ppo", 0.40, 0.30, 0.50)]  # baseline as A: ppo wins 60 % [50, 70]
    flags = scorer_disagreements(res, human=people)
    assert [(f.first.scorer, f.second.scorer) for f in flags] == [("rm/rm-r1", "human"), ("gold", "human")]
    assert flags[0].second.text() == "60 % [50, 70]"
    assert flags[1].message().startswith("gold says ppo wins 80 % [72, 88]; human raters say 60 % [50, 70]: "
                                         "gold and human raters disagree")
    samples = paired_samples(40, rm_wins=30, gold_wins=30)
    assert all(f.rule == "disjoint intervals" for f in scorer_disagreements(res, samples, people))


def test_two_reward_models_and_the_judge():
    res = results({("ppo", "rm/a"): (0.90, 0.85, 0.95), ("ppo", "rm/b"): (0.55, 0.45, 0.65),
                   ("ppo", "judge"): (0.10, 0.05, 0.15)}, scorers=("rm/a", "rm/b", "judge"), policies=("ppo",))
    (flag,) = scorer_disagreements(res)  # the judge is not among the scorers compared
    assert flag.verdict() == "the reward models disagree"


# --- reply drift -----------------------------------------------------------------------------------------------

BASE_REPLY = "Hello Ana, your refund for order 1234 was approved today and will arrive within five days. Thanks!"


def drift_samples(extra: str, with_tokens: bool = True) -> pd.DataFrame:
    rows = []
    for i in range(4):
        for policy, reply in (("sft", BASE_REPLY), ("ppo", BASE_REPLY + extra), ("dpo", BASE_REPLY)):
            rows.append({"policy": policy, "prompt_index": i, "reply": reply, "tokens": len(reply.split()) + 1})
    frame = pd.DataFrame(rows)
    return frame if with_tokens else frame.drop(columns="tokens")


def test_drift_flags_longer_repetitive_replies_and_not_equal_ones():
    loop = " we are here to help you" * 3  # 18 words, most of its trigrams repeated
    ppo, dpo = reply_drift(drift_samples(loop), "sft")
    assert (ppo.policy, ppo.length_unit, ppo.fluency_measure) == ("ppo", "tokens", "distinct-3")
    assert ppo.length_change > 0.2 and ppo.fluency_change < -0.05
    assert len(ppo.flags) == 2 and "longer" in ppo.flags[0] and "fluency" in ppo.flags[1]
    assert (dpo.length_change, dpo.fluency_change, dpo.flags) == (0.0, 0.0, ())
    # Slightly longer and still fluent: within both thresholds.
    (small, _) = reply_drift(drift_samples(" Regards, Sam."), "sft")
    assert 0 < small.length_change < 0.2 and small.flags == ()


def test_drift_uses_words_without_tokens_and_the_rubric_fluency_when_present():
    frame = drift_samples(" " + " ".join(f"word{k}" for k in range(20)), with_tokens=False)
    (ppo, _) = reply_drift(frame, "sft")
    assert ppo.length_unit == "words" and ppo.length - ppo.baseline_length == 20
    assert ppo.fluency_change == 0.0 and ppo.flags[0].startswith("replies longer")  # new words, no repeats
    frame[FLUENCY_COLUMN] = frame["policy"].map({"sft": 0.97, "ppo": 0.88, "dpo": 0.96})
    (ppo, dpo) = reply_drift(frame, "sft")
    assert ppo.fluency_measure == FLUENCY_COLUMN and ppo.fluency == pytest.approx(0.88)
    assert "fluency down 0.09" in ppo.flags[-1] and dpo.flags == ()
    with pytest.raises(ValueError, match="baseline 'base'"):
        reply_drift(frame, "base")


def test_distinct_trigram_share():
    assert distinct_trigram_share("") == 0.0 and distinct_trigram_share("Hi there") == 1.0
    assert distinct_trigram_share("a b c a b c a b c") == pytest.approx(3 / 7)
    assert distinct_trigram_share(BASE_REPLY) == 1.0


# --- best policy -----------------------------------------------------------------------------------------------

def test_best_policy_ranks_by_gold_over_a_disagreeing_reward_model():
    res = results({("ppo", "rm/rm-r1"): (0.90, 0.85, 0.95), ("ppo", "gold"): (0.60, 0.52, 0.68),
                   ("dpo", "rm/rm-r1"): (0.70, 0.60, 0.80), ("dpo", "gold"): (0.72, 0.64, 0.80)})
    name, rule = best_policy(res, {"ppo": "runs/ppo", "dpo": "runs/dpo"})
    assert name == "dpo"
    assert rule.startswith("The best policy is the candidate with the highest gold win rate against sft "
                           "among those whose 95 % interval lies above 50 %") and rule.count(".") == 1


def test_best_policy_rejects_an_interval_holding_one_half_and_breaks_ties():
    res = results({("ppo", "gold"): (0.80, 0.45, 0.95), ("dpo", "gold"): (0.60, 0.55, 0.65)}, scorers=("gold",),
                  primary="gold")
    assert best_policy(res, ["ppo", "dpo"])[0] == "dpo"
    tie = results({("ppo", "gold"): (0.70, 0.55, 0.85), ("dpo", "gold"): (0.70, 0.60, 0.80)}, scorers=("gold",),
                  primary="gold")
    assert best_policy(tie, ["ppo", "dpo"])[0] == "dpo"  # the higher lower end
    assert best_policy(results({("ppo", "gold"): (0.7, 0.6, 0.8), ("dpo", "gold"): (0.7, 0.6, 0.8)},
                               scorers=("gold",), primary="gold"), ["ppo", "dpo"])[0] == "ppo"


def test_best_policy_is_none_when_nothing_beats_the_baseline():
    res = results({("ppo", "gold"): (0.55, 0.50, 0.60), ("dpo", "gold"): (0.30, 0.20, 0.40),
                   ("ppo", "rm/rm-r1"): (0.95, 0.90, 0.99), ("dpo", "rm/rm-r1"): (0.95, 0.90, 0.99)})
    name, rule = best_policy(res, ["ppo", "dpo"])
    assert name is None and "gold" in rule and "keeps its starting policy" in rule


def test_best_policy_prefers_human_when_every_candidate_has_it_else_gold_else_primary():
    res = results({("ppo", "gold"): (0.70, 0.60, 0.80), ("dpo", "gold"): (0.60, 0.55, 0.65)})
    people = [human("ppo", "sft", 0.52, 0.45, 0.59), human("sft", "dpo", 0.35, 0.28, 0.42)]  # dpo 65 % [58, 72]
    name, rule = best_policy(res, ["ppo", "dpo"], people)
    assert name == "dpo" and "human raters win rate" in rule
    assert best_policy(res, ["ppo", "dpo"], people[1:])[0] == "ppo"  # ppo has no human result: gold decides
    no_gold = results({("ppo", "rm/rm-r1"): (0.7, 0.6, 0.8)}, scorers=("rm/rm-r1",), policies=("ppo",))
    name, rule = best_policy(no_gold, ["ppo"])
    assert name == "ppo" and "RM rm-r1 win rate" in rule
    with pytest.raises(ValueError, match="'ghost'"):
        best_policy(no_gold, ["ghost"])


def test_selection_imports_no_torch():
    code = "import sys, rlhf.eval.selection; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
