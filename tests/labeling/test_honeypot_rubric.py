"""Honeypots follow the team's rubric (``label_push.honeypots.rubric``), and a pull says why it left annotators out.

The team's rubric here is the demo world's gold rubric turned upside down (:func:`reversed_rubric`), the
sharpest disagreement with the default. Unit tests cover the honeypot bank, the config key and the pull's
words; two tests against the real local service run a small round (8 prompts, 6 honeypots, two bots):
bots that follow the rubric the honeypots were ordered by pass them; bots that follow another are all
excluded, and the pull's error names them, the flag and the threshold.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from rlhf.configs.pipeline import PipelineConfig
from rlhf.core.config import ConfigError
from rlhf.core.errors import UserError
from rlhf.data.candidates import candidate_id
from rlhf.data.pairs import read_pairs
from rlhf.labeling.loop.common import load_pseudonym_key, pseudonym, read_push
from rlhf.labeling.loop.honeypots import demo_honeypots, load_rubric
from rlhf.labeling.loop.pull import exclusion_line, exclusions, no_pairs_message
from rlhf.labeling.loop.slots import read_slot_map
from rlhf.preferences.quality import quality_report
from rlhf.preferences.votes import RankingVote
from rlhf.stages import load_config
from rlhf.stages.label_pull import run_pull
from rlhf.stages.label_push import run_push
from rlhf.stages.label_simulate import run_simulate
from rlhf.world.demo import gold_rubric
from tests.labeling.conftest import demo_replies

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "label"
GOLD = "rlhf.world.demo:gold_rubric"
REVERSED = f"{__name__}:reversed_rubric"  # importable by the bots as pytest imported this module


def reversed_rubric(prompt: str, reply: str) -> float:
    """The team's rubric in these tests: the demo world's gold rubric upside down (the worst reply is best)."""
    return 1.0 - gold_rubric(prompt, reply)


def _best_first(prompt: str, texts, rubric) -> list[str]:
    return sorted(texts, key=lambda t: -rubric(prompt, t))


# ------------------------------------------------------------------------------------------- units
def test_demo_honeypots_are_ordered_by_the_given_rubric():
    pots = demo_honeypots(6, 4, seed=3, rubric=reversed_rubric)
    for pot in pots:
        by_rank = [t for _, t in sorted(zip(pot.ranks, pot.texts))]
        assert by_rank == _best_first(pot.prompt, pot.texts, reversed_rubric)
        assert by_rank == _best_first(pot.prompt, pot.texts, gold_rubric)[::-1]  # gold bots get every pair wrong
    default = demo_honeypots(6, 4, seed=3)
    for pot in default:
        assert [t for _, t in sorted(zip(pot.ranks, pot.texts))] == _best_first(pot.prompt, pot.texts, gold_rubric)


def test_a_bad_rubric_is_a_one_line_error_naming_the_key():
    for spec, says in (("no_colon", "not a callable spec"), ("rlhf.world.demo:no_such_rubric", "no attribute"),
                       ("no_such_module_x:f", "cannot import module")):
        with pytest.raises(UserError) as err:
            load_rubric(spec)
        text = str(err.value)
        assert "\n" not in text and text.startswith("honeypots.rubric: ") and says in text
        assert "set honeypots.rubric to a module:function (prompt, reply) -> score" in text
    assert load_rubric(REVERSED) is reversed_rubric and load_rubric(GOLD) is gold_rubric
    with pytest.raises(UserError, match=r"honeypots.rubric .* returned str, not a number"):
        demo_honeypots(1, 4, seed=0, rubric=lambda prompt, reply: "good")


def test_the_rubric_key_is_refused_without_demo_honeypots():
    cfg = load_config(CONFIGS / "push-demo.yaml", [f"honeypots.rubric={REVERSED}"])
    assert (cfg.honeypots.rubric, cfg.honeypots.demo) == (REVERSED, 15)
    assert load_config(CONFIGS / "push-demo.yaml").honeypots.rubric == GOLD
    with pytest.raises(ConfigError, match="honeypots.rubric orders demo honeypots only"):
        load_config(CONFIGS / "push-demo.yaml", ["honeypots.demo=0", f"honeypots.rubric={REVERSED}"])


def _mismatched_votes() -> tuple[list[RankingVote], dict[str, dict[str, int]]]:
    """Two attentive annotators who agree on every record and order every honeypot against its answer."""
    answers, votes = {}, []
    for i in range(5):
        answers[f"hp{i}"] = {"x": 1, "y": 2, "z": 3}
        for name in ("ann-a", "ann-b"):
            votes.append(RankingVote(f"hp{i}", f"p-hp{i}", name, {"x": 3, "y": 2, "z": 1}, slots=("y", "x", "z"),
                                     honeypot=True))
    for i in range(10):
        slots = ("x", "y", "z") if i % 2 else ("z", "y", "x")
        for name in ("ann-a", "ann-b"):
            votes.append(RankingVote(f"r{i}", f"p-r{i}", name, {"x": 1, "y": 2, "z": 3}, slots=slots))
    return votes, answers


def test_the_pull_names_each_excluded_annotator_the_flag_the_value_and_the_threshold():
    votes, answers = _mismatched_votes()
    report = quality_report(votes, honeypot_answers=answers, bias_p=0.01, careless_agreement=0.4,
                            honeypot_accuracy=0.8)
    excluded = exclusions(report, ["careless", "position_bias"])
    assert sorted(excluded) == ["ann-a", "ann-b"]
    assert exclusion_line("ann-a", excluded["ann-a"]) == (
        "label pull: excluded ann-a (careless: honeypot accuracy 0.00 < quality.honeypot_accuracy 0.8)")
    assert exclusions(report, ["position_bias"]) == {}  # only the flags exclude_flagged names

    message = no_pairs_message(len(votes), "round-1", excluded, report.annotators)
    assert "\n" not in message
    assert message.startswith("no training pairs from 30 submitted rankings of dataset 'round-1': 2 of 2 annotators "
                              "excluded by exclude_flagged (2 'careless' by honeypot accuracy 0.00 < "
                              "quality.honeypot_accuracy 0.8)")
    assert "lower the threshold(s) or drop 'careless' from exclude_flagged" in message
    assert "check that the honeypots follow the annotators' rubric (label_push.honeypots.rubric" in message
    assert "annotate more" in no_pairs_message(3, "round-1", {}, 2)  # nobody excluded: the old advice


def test_the_pull_words_for_leave_one_out_and_position_bias():
    votes, _ = _mismatched_votes()
    votes = [v for v in votes if not v.honeypot]
    flipped = [RankingVote(v.record_id, v.prompt_id, "ann-c", {"x": 3, "y": 2, "z": 1}, slots=("x", "y", "z"))
               for v in votes if v.annotator == "ann-a"]  # against the others' majority, and slot A last
    report = quality_report(votes + flipped, bias_p=0.01, careless_agreement=0.4)
    excluded = exclusions(report, ["careless", "position_bias"])
    assert exclusion_line("ann-c", excluded["ann-c"]) == (
        "label pull: excluded ann-c (position_bias: slot-A p=0.002 < quality.bias_p 0.01; "
        "careless: leave-one-out agreement 0.00 < quality.careless_agreement 0.4)")
    message = no_pairs_message(len(votes) + 10, "round-1", excluded, report.annotators)
    assert "1 of 3 annotators excluded" in message
    assert "1 'position_bias' by slot-A p=0.002 < quality.bias_p 0.01" in message
    assert "label_push.honeypots.rubric" not in message  # honeypots played no part


# ------------------------------------------------------------------------------------------- live service
def _candidates(path: Path, n: int, seed: int) -> Path:
    """``n`` demo prompts with 4 distinct candidates each (the generate stage's format; no model)."""
    rows = []
    for prompt, texts in demo_replies(n, seed):
        rows.append({"prompt_id": prompt.id, "prompt": prompt.text,
                     "candidates": [{"id": candidate_id(prompt.id, t), "text": t, "policy": "p"} for t in texts]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _bots(prefix: str, rubric: str | None) -> dict:
    section = {"bots": 2, "careless_share": 0.0, "biased_share": 0.0, "username_prefix": prefix, "batch": 20}
    return {**section, "rubric": rubric} if rubric else section


PULL = {"exclude_flagged": ["careless", "position_bias"],
        "quality": {"careless_agreement": 0.4, "honeypot_accuracy": 0.8, "bias_p": 0.001}}


@pytest.mark.slow
def test_honeypots_follow_the_team_rubric_so_annotators_who_follow_it_pass(labeling_service, tmp_path):
    # The pipeline's way: label_simulate.rubric is the team's rubric, and the push's honeypots follow it.
    live, prefix = labeling_service, f"hp{uuid.uuid4().hex[:5]}"
    cfg = PipelineConfig(run={"root": str(tmp_path)}, label_push={"min_submitted": 2, "honeypots": {"demo": 6}},
                         label_simulate=_bots(prefix, REVERSED), label_pull=PULL)
    wiring = {"service": {"home": str(live.home)}}
    push_cfg = cfg.stage_config("label_push", {**wiring, "candidates": str(_candidates(tmp_path / "c.jsonl", 8, 1))}, 1)
    assert push_cfg.honeypots.rubric == REVERSED
    push = run_push(push_cfg, progress=False)
    assert json.loads((push / "push.json").read_text())["honeypot_rubric"] == REVERSED
    pots = [s for s in read_slot_map(push).values() if s.honeypot]
    assert len(pots) == 6
    for pot in pots:  # the known answer is the team's order
        by_rank = sorted(pot.answer, key=pot.answer.__getitem__)
        assert [pot.texts[c] for c in by_rank] == _best_first(pot.prompt, pot.texts.values(), reversed_rubric)

    bots = run_simulate(cfg.stage_config("label_simulate", {**wiring, "push": str(push)}, 1))
    snapshot = run_pull(cfg.stage_config("label_pull", {**wiring, "push": str(push)}, 1))
    key = load_pseudonym_key(live.config)
    report = {a["annotator"]: a for a in json.loads((snapshot / "quality_report.json").read_text())["per_annotator"]}
    for bot in bots:
        quality = report[pseudonym(bot.username, key)]
        assert quality["honeypot_accuracy"] >= 0.8 and quality["flags"] == [] and quality["reasons"] == []
    assert json.loads((snapshot / "snapshot.json").read_text())["excluded_annotators"] == []
    assert len(read_pairs(snapshot)) > 0


@pytest.mark.slow
def test_honeypots_against_the_annotators_rubric_exclude_them_and_the_pull_says_why(labeling_service, tmp_path,
                                                                                    capsys):
    live, prefix = labeling_service, f"hp{uuid.uuid4().hex[:5]}"
    service = [f"service.home={live.home}"]
    candidates = _candidates(tmp_path / "c.jsonl", 8, 2)
    push = run_push(load_config(CONFIGS / "push-demo.yaml", [
        f"run.root={tmp_path}", f"candidates={candidates}", "honeypots.demo=6", f"honeypots.rubric={REVERSED}",
        *service]), progress=False)
    bots = run_simulate(load_config(None, [f"push={push}", "bots=2", f"username_prefix={prefix}", "batch=20",
                                           *service], expect_stage="label_simulate"))  # the gold rubric
    pull = load_config(CONFIGS / "pull-demo.yaml", [f"run.root={tmp_path}", f"push={push}", "quality.bias_p=0.001",
                                                    *service])
    with pytest.raises(UserError) as err:
        run_pull(pull)
    key = load_pseudonym_key(live.config)
    names = sorted(pseudonym(b.username, key) for b in bots)
    out = capsys.readouterr().out
    for name in names:
        assert f"label pull: excluded {name} (careless: honeypot accuracy 0." in out
    assert out.count("< quality.honeypot_accuracy 0.8)") == 2
    message = str(err.value)
    assert "\n" not in message and f"dataset '{read_push(push).dataset}': 2 of 2 annotators excluded" in message
    assert "'careless' by honeypot accuracy" in message and "< quality.honeypot_accuracy 0.8" in message
    assert "drop 'careless' from exclude_flagged" in message and "label_push.honeypots.rubric" in message
