"""Paired win rate (ties count half) with a paired bootstrap interval and exact binomial checks.

``predictions`` are the scores of the evaluated policy, ``references`` the scores of the baseline on the
same prompts, in the same order. The method lives in :mod:`rlhf.eval.stats` (this module only adapts it to
the ``evaluate`` interface); it ships inside the package (``rlhf/eval/metrics/``) and is loaded by path:
``evaluate.load(str(rlhf.eval.analysis.default_metrics_dir() / "win_rate"))``.
"""

import datasets
import evaluate

from rlhf.eval.stats import compare_scores

_DESCRIPTION = """Win rate of predictions over references: mean of 1 (higher), 0.5 (tie within tie_tolerance),
0 (lower); paired bootstrap percentile interval; Wilson and Clopper-Pearson intervals with ties as half;
two-sided sign test p-value (ties dropped)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): scores of the evaluated policy.
    references (list of float): scores of the baseline on the same prompts.
    tie_tolerance (float): score differences up to this count as ties (default 0).
    n_boot (int): bootstrap resamples (default 2000).
    confidence (float): interval level (default 0.95).
    seed (int): bootstrap seed (default 0).
    groups (list, optional): one prompt label per pair; resample whole prompts (several samples each).
Returns:
    n, wins, ties, losses, win_rate, ci_low, ci_high, wilson_low, wilson_high, cp_low, cp_high, p_value.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, tie_tolerance=0.0, n_boot=2000, confidence=0.95, seed=0,
                 groups=None):
        result = compare_scores(predictions, references, tie_tolerance=tie_tolerance, n_boot=n_boot,
                                confidence=confidence, seed=seed, groups=groups)
        return {
            "n": result.n, "wins": result.wins, "ties": result.ties, "losses": result.losses,
            "win_rate": result.win_rate,
            "ci_low": result.bootstrap.low, "ci_high": result.bootstrap.high,
            "wilson_low": result.wilson.low, "wilson_high": result.wilson.high,
            "cp_low": result.clopper_pearson.low, "cp_high": result.clopper_pearson.high,
            "p_value": result.p_value,
        }
