"""Length-controlled win rate (AlpacaEval 2 style): the win rate predicted at equal reply lengths.

``predictions`` / ``references`` are the paired scores of the evaluated policy and the baseline;
``length_diff`` is ``len(policy reply) - len(baseline reply)`` per pair. The method (logistic regression of
the outcome on ``tanh(length_diff / std)``, LC = sigmoid(intercept)) lives in
:mod:`rlhf.eval.length_control`; this module adapts it to ``evaluate`` and is loaded by path.
"""

import datasets
import evaluate

from rlhf.eval.length_control import length_controlled_win_rate
from rlhf.eval.stats import pairwise_outcomes

_DESCRIPTION = """Length-controlled win rate: logistic regression of the paired outcome (ties as half) on the
bounded length difference; the prediction at zero length difference, with a paired bootstrap interval."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): scores of the evaluated policy.
    references (list of float): scores of the baseline on the same prompts.
    length_diff (list of float): reply length of the policy minus that of the baseline, per pair.
    tie_tolerance (float): score differences up to this count as ties (default 0).
    n_boot (int): bootstrap resamples (default 1000).
    confidence (float): interval level (default 0.95).
    seed (int): bootstrap seed (default 0).
Returns:
    lc_win_rate, raw_win_rate, ci_low, ci_high, theta (intercept), phi (length slope), sigma (length scale).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LengthControlledWinRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Dubois et al. 2024, Length-Controlled AlpacaEval, arXiv:2404.04475",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, length_diff=None, tie_tolerance=0.0, n_boot=1000,
                 confidence=0.95, seed=0):
        if length_diff is None:
            raise ValueError("length_controlled_win_rate needs length_diff (policy length minus baseline length)")
        outcomes = pairwise_outcomes(predictions, references, tie_tolerance)
        result = length_controlled_win_rate(outcomes, length_diff, n_boot=n_boot, confidence=confidence, seed=seed)
        return {
            "lc_win_rate": result.lc_win_rate, "raw_win_rate": result.raw_win_rate,
            "ci_low": result.interval.low, "ci_high": result.interval.high,
            "theta": result.theta, "phi": result.phi, "sigma": result.sigma,
        }
