"""From a table of scored samples to the evaluation results: summaries, comparisons, categories, KL.

The input is the per-sample table that ``rlhf eval`` writes as ``samples.parquet``, one row per
(policy, prompt, sample) with columns:

* ``policy``, ``prompt_index``, ``prompt_id``, ``prompt``, ``category``, ``sample``, ``reply``;
* ``tokens``, ``chars``, ``finished`` (the reply ended with EOS rather than at the length limit);
* ``logprob_policy``, ``logprob_reference``, ``kl`` (per-sample log-ratio; NaN when KL is off);
* ``score/<scorer>`` for each per-sample scorer (``gold``, ``rm/<name>``);
* ``judge_prob`` (P(this reply beats the baseline's reply to the same prompt and sample index), judge
  asked in both orders; NaN for the baseline or without a judge) and ``judge_consistent``.

Comparisons pair rows of two policies on (``prompt_index``, ``sample``). Every statistic goes through the
``evaluate`` modules shipped in the package's ``rlhf/eval/metrics/`` folder (:class:`MetricSuite`), which wrap the
functions of :mod:`rlhf.eval.stats`, :mod:`rlhf.eval.length_control` and :mod:`rlhf.eval.divergence`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rlhf.core.errors import UserError
from rlhf.eval.stats import describe

__all__ = ["JUDGE", "AnalysisSettings", "MetricSuite", "analyse", "default_metrics_dir", "paired_frame",
           "score_column"]

JUDGE = "judge"
METRIC_NAMES = ("win_rate", "length_controlled_win_rate", "sequence_kl", "best_of_n")


def score_column(scorer: str) -> str:
    """The samples-table column of a per-sample scorer."""
    return f"score/{scorer}"


def default_metrics_dir() -> Path:
    """The package's ``rlhf/eval/metrics/`` folder (package data: installed with ``rlhf`` from a wheel too)."""
    return Path(__file__).resolve().parent / "metrics"


class MetricSuite:
    """The evaluation metrics as ``evaluate`` modules, loaded by path from a folder (nothing is downloaded)."""

    def __init__(self, metrics_dir: str | Path | None = None) -> None:
        folder = Path(metrics_dir) if metrics_dir is not None else default_metrics_dir()
        missing = [name for name in METRIC_NAMES if not (folder / name / f"{name}.py").is_file()]
        if missing:
            raise UserError(f"metric modules {missing} not found under {folder}; set metrics_dir to a folder "
                            f"holding <name>/<name>.py for each, or leave it unset for {default_metrics_dir()}")
        import evaluate

        self.folder = folder
        self.win_rate = evaluate.load(str(folder / "win_rate"), keep_in_memory=True)
        self.length_controlled = evaluate.load(str(folder / "length_controlled_win_rate"), keep_in_memory=True)
        self.sequence_kl = evaluate.load(str(folder / "sequence_kl"), keep_in_memory=True)
        self.best_of_n = evaluate.load(str(folder / "best_of_n"), keep_in_memory=True)


@dataclass(frozen=True)
class AnalysisSettings:
    """Statistical settings of an analysis."""

    tie_tolerance: float = 0.0
    n_boot: int = 2000
    lc_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0
    length_unit: str = "tokens"


def paired_frame(frame: pd.DataFrame, policy: str, baseline: str) -> pd.DataFrame:
    """Rows of ``policy`` joined with ``baseline``'s on (prompt_index, sample); baseline columns get ``_b``."""
    a = frame[frame["policy"] == policy]
    b = frame[frame["policy"] == baseline]
    if a.empty or b.empty:
        raise UserError(f"no samples for policy '{policy if a.empty else baseline}' in the samples table")
    joined = a.merge(b, on=["prompt_index", "sample"], suffixes=("", "_b"), validate="one_to_one")
    if joined.empty:
        raise UserError(f"'{policy}' and '{baseline}' share no (prompt, sample) pairs; evaluate one prompt set")
    return joined.sort_values(["prompt_index", "sample"]).reset_index(drop=True)


def _groups(joined: pd.DataFrame) -> list[int] | None:
    return joined["prompt_index"].tolist() if joined["sample"].nunique() > 1 else None


def compare(frame: pd.DataFrame, policy: str, baseline: str, scorer: str, suite: MetricSuite,
            settings: AnalysisSettings, with_length_control: bool = True) -> dict[str, Any]:
    """Win rate (and LC win rate) of ``policy`` over ``baseline`` under one scorer."""
    joined = paired_frame(frame, policy, baseline)
    if scorer == JUDGE:
        # The judge already compared each pair (both orders): its preference for the policy's reply is
        # scored against indifference (0.5), so a win is a judge preference above one half.
        joined = joined[joined["judge_prob"].notna()]
        if joined.empty:
            raise UserError(f"no judge verdicts for '{policy}' against '{baseline}'; the judge compares "
                            "checkpoints with the baseline only")
        a, b = joined["judge_prob"].to_numpy(float), np.full(len(joined), 0.5)
    else:
        a = joined[score_column(scorer)].to_numpy(float)
        b = joined[score_column(scorer) + "_b"].to_numpy(float)
    groups = _groups(joined)
    win = suite.win_rate.compute(predictions=a, references=b, tie_tolerance=settings.tie_tolerance,
                                 n_boot=settings.n_boot, confidence=settings.confidence, seed=settings.seed,
                                 groups=groups)
    row: dict[str, Any] = {"policy": policy, "baseline": baseline, "scorer": scorer, **win}
    if with_length_control:
        unit = settings.length_unit
        diff = (joined[unit] - joined[unit + "_b"]).to_numpy(float)
        lc = suite.length_controlled.compute(predictions=a, references=b, length_diff=diff,
                                             tie_tolerance=settings.tie_tolerance, n_boot=settings.lc_boot,
                                             confidence=settings.confidence, seed=settings.seed)
        row.update({"lc_win_rate": lc["lc_win_rate"], "lc_ci_low": lc["ci_low"], "lc_ci_high": lc["ci_high"],
                    "lc_length_slope": lc["phi"], "longer_rate": float(np.mean(diff > 0))})
    if scorer == JUDGE:
        row["judge_consistency"] = float(joined["judge_consistent"].astype(float).mean())
    return row


def _policy_summary(rows: pd.DataFrame, scorers: list[str], suite: MetricSuite, with_kl: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": len(rows), "prompts": int(rows["prompt_index"].nunique()),
                           "finished_rate": float(rows["finished"].astype(float).mean()),
                           "tokens": describe(rows["tokens"].to_numpy(float)),
                           "chars": describe(rows["chars"].to_numpy(float))}
    for scorer in scorers:
        out[score_column(scorer)] = describe(rows[score_column(scorer)].to_numpy(float))
    if with_kl and rows["logprob_reference"].notna().all():
        out["kl"] = suite.sequence_kl.compute(predictions=rows["logprob_policy"].to_numpy(float),
                                              references=rows["logprob_reference"].to_numpy(float),
                                              lengths=rows["tokens"].to_numpy(float))
    else:
        out["kl"] = None
    return out


def _correlations(frame: pd.DataFrame, scorers: list[str], unit: str) -> list[dict[str, Any]]:
    from scipy import stats as sps

    rows = []
    for scorer in scorers:
        for policy, part in [("(all)", frame), *frame.groupby("policy", sort=False)]:
            x, y = part[unit].to_numpy(float), part[score_column(scorer)].to_numpy(float)
            ok = len(x) > 2 and np.std(x) > 0 and np.std(y) > 0
            rows.append({"scorer": scorer, "policy": policy, "n": len(x),
                         "pearson": float(sps.pearsonr(x, y)[0]) if ok else math.nan,
                         "spearman": float(sps.spearmanr(x, y)[0]) if ok else math.nan})
    return rows


def _categories(frame: pd.DataFrame, policies: list[str], baseline: str, primary: str, suite: MetricSuite,
                settings: AnalysisSettings) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    per_sample = primary != JUDGE
    for category in sorted(frame["category"].astype(str).unique()):
        part = frame[frame["category"].astype(str) == category]
        for policy in policies:
            mine = part[part["policy"] == policy]
            if mine.empty:
                continue
            row: dict[str, Any] = {"category": category, "policy": policy, "n": len(mine)}
            if per_sample:
                row["mean"] = float(mine[score_column(primary)].mean())
            if "score/gold" in mine:
                row["gold_mean"] = float(mine["score/gold"].mean())
            if policy != baseline:
                win = compare(part, policy, baseline, primary, suite, settings, with_length_control=False)
                row.update({"win_rate": win["win_rate"], "ci_low": win["ci_low"], "ci_high": win["ci_high"]})
            rows.append(row)
    return rows


def analyse(
    frame: pd.DataFrame,
    policies: list[str],
    baseline: str,
    scorers: list[str],
    primary: str,
    suite: MetricSuite,
    settings: AnalysisSettings,
    with_kl: bool = True,
) -> dict[str, Any]:
    """Every statistic of an evaluation, as plain data (see the module docstring for the table's columns).

    ``policies`` lists the evaluated checkpoints in order (the baseline excluded); ``scorers`` the scorer
    names (per-sample scorers and, when present, ``judge``). Each checkpoint is compared with the baseline
    under every scorer, and with the checkpoint before it under every per-sample scorer.
    """
    if primary not in scorers:
        raise UserError(f"primary scorer '{primary}' is not among the scorers {scorers}")
    per_sample = [s for s in scorers if s != JUDGE]
    everyone = [baseline, *policies]
    comparisons = [compare(frame, p, baseline, s, suite, settings) for p in policies for s in scorers]
    for before, after in itertools.pairwise(policies):
        comparisons += [compare(frame, after, before, s, suite, settings) for s in per_sample]
    summary = {name: _policy_summary(frame[frame["policy"] == name], per_sample, suite, with_kl) for name in everyone}
    return {
        "policies": everyone,
        "baseline": baseline,
        "scorers": scorers,
        "primary": primary,
        "settings": settings.__dict__,
        "summary": summary,
        "comparisons": comparisons,
        "categories": _categories(frame, everyone, baseline, primary, suite, settings),
        "length_correlation": _correlations(frame, per_sample, settings.length_unit),
    }
