"""The report's scorer-agreement section on a crafted round where the reward model is wrong: the disagreement
flag, the reply-drift table with its flagged row, the best-policy rule, and the rounds side by side."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf.core.errors import UserError
from rlhf.eval.analysis import AnalysisSettings, MetricSuite, analyse
from rlhf.stages.report import ReportConfig, run_report
from rlhf.world.demo import gold_rubric
from tests.eval_fixtures import make_eval_folder

LOOP = " we are here to help you" * 4  # the drifted policy's habit: longer replies, a repeated phrase


def drift_round(eval_dir: Path) -> None:
    """Rewrite an eval folder (before any report reads it) as a round where ``dpo`` drifted: its replies end
    in :data:`LOOP`, the gold rubric rescores them, and the reward model pays for that phrase, so it says
    ``dpo`` wins where gold does not. The statistics come from the real analysis code. The folder's manifest keeps
    the old output hash, which only the report's skip check reads."""
    frame = pd.read_parquet(eval_dir / "samples.parquet")
    old = json.loads((eval_dir / "results.json").read_text())
    dpo = frame["policy"] == "dpo"
    frame.loc[dpo, "reply"] = frame.loc[dpo, "reply"] + LOOP
    frame["tokens"] = frame["reply"].str.split().str.len() + 1
    frame["chars"] = frame["reply"].str.len()
    frame["score/gold"] = [gold_rubric(p, r) for p, r in zip(frame["prompt"], frame["reply"])]
    noise = np.random.default_rng(0).normal(0, 0.5, len(frame))
    frame["score/rm/demo"] = frame["score/gold"] * 4 + 1.5 * frame["reply"].str.count("here to help") + noise
    results = analyse(frame, ["dpo"], "sft", ["rm/demo", "gold"], "rm/demo", MetricSuite(),
                      AnalysisSettings(n_boot=300, lc_boot=200))
    results.update({k: old[k] for k in ("best_of_n", "generation", "prompt_set")})
    frame.to_parquet(eval_dir / "samples.parquet", index=False)
    (eval_dir / "results.json").write_text(json.dumps(results, default=str))


@pytest.fixture(scope="module")
def drifted(tmp_path_factory) -> tuple[str, dict, Path]:
    root = tmp_path_factory.mktemp("runs")
    first = make_eval_folder(root)
    second = root / "eval" / "round-2"
    shutil.copytree(first, second)
    drift_round(second)
    out = run_report(ReportConfig(run={"root": str(root)}, eval_dir=str(second), rounds=[str(first)]))
    return (out / "report.html").read_text(encoding="utf-8"), json.loads((second / "results.json").read_text()), first


def _section(html: str, title: str) -> str:
    start = html.index(f"<h2>{title}</h2>")
    return html[start:html.index("</section>", start)]


def test_the_reward_models_disagreement_with_gold_is_flagged(drifted):
    html, results, _ = drifted
    rate = {c["scorer"]: c for c in results["comparisons"]}
    assert rate["rm/demo"]["ci_low"] > rate["gold"]["ci_high"]  # the crafted round: RM wins, gold does not
    agreement = _section(html, "Scorer agreement")
    rm, gold = rate["rm/demo"], rate["gold"]
    expected = (f"RM demo says dpo wins {100 * rm['win_rate']:.0f} % [{100 * rm['ci_low']:.0f}, "
                f"{100 * rm['ci_high']:.0f}]; gold says {100 * gold['win_rate']:.0f} % [{100 * gold['ci_low']:.0f}, "
                f"{100 * gold['ci_high']:.0f}]: the reward model overrates this policy")
    assert f"<div class='flag'><b>Disagreement.</b> {expected} (paired difference" in agreement
    assert "No disagreement" not in agreement


def test_the_drift_table_marks_the_drifted_policy(drifted):
    agreement = _section(drifted[0], "Scorer agreement")
    (row,) = re.findall(r'<tr class="flagged">(.*?)</tr>', agreement)
    assert row.startswith("<td>dpo</td>") and "replies longer by" in row and "fluency down" in row
    assert "mean tokens" in agreement and "distinct-3" in agreement


def test_the_rule_sentence_and_the_choice_are_stated(drifted):
    html, results, _ = drifted
    gold = next(c for c in results["comparisons"] if c["scorer"] == "gold")
    rule = ("The best policy is the candidate with the highest gold win rate against sft among those whose 95 % "
            "interval lies above 50 % (ties: the higher lower end); if none does, the next round keeps its "
            "starting policy.")
    assert f"<div class='rule'>{rule} " in html
    assert gold["ci_low"] <= 0.5 and f"<div class='rule'>{rule} <b>Chosen: none</b>: no policy beats sft" in html


def test_rounds_side_by_side(drifted, tmp_path):
    html, _, first = drifted
    rounds = _section(html, "Rounds side by side")
    rows = re.findall(r"<tr><td>(.*?)</tr>", rounds)
    assert [r.split("</td>")[0] for r in rows] == ["1", "2 (this report)"]
    first_gold = next(c for c in json.loads((first / "results.json").read_text())["comparisons"]
                      if c["scorer"] == "gold")
    assert f"dpo: {100 * first_gold['win_rate']:.0f} % [{100 * first_gold['ci_low']:.0f}, " in rows[0]
    assert rows[0].endswith("<td>dpo (by gold)</td>")  # round 1's dpo clearly beats sft
    assert rows[1].endswith("<td>none by gold: the next round keeps its starting policy</td>")
    with pytest.raises(UserError, match="rounds: .* is not a completed eval folder"):
        run_report(ReportConfig(run={"root": str(tmp_path)}, eval_dir=str(first), rounds=[str(tmp_path)]))


def test_reward_model_calibration_before_and_after_is_shown(drifted):
    from rlhf.eval.report_html import render_report

    _, results, first = drifted
    frame = pd.read_parquet(first / "samples.parquet")
    card = {"model_path": "m", "pairs": 254, "accuracy": 0.861, "ece": 0.084, "ece_calibrated": 0.031,
            "temperature": 1.7, "length_baseline_accuracy": 0.55, "reward_length_corr": -0.1}
    html = render_report({**results, "reward_models": {"rm-r1": card}}, frame, {})
    section = _section(html, "Reward models")
    assert "rm-r1" in section and "86.1%" in section and ">0.084<" in section and ">0.031<" in section
    # A reward model without a training summary (e.g. a hub model) gets no row, and no section at all.
    bare = render_report({**results, "reward_models": {"hub": {"model_path": "x"}}}, frame, {})
    assert "<h2>Reward models</h2>" not in bare
