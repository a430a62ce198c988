"""Best-of-n: expected proxy and gold score of the highest-proxy reply among n samples, for several n.

Each row is one prompt: ``predictions`` holds the proxy scores (a reward model) of its N samples,
``references`` their gold scores (the rubric; pass the proxy again when there is no gold). The exact
order-statistics expectation and the KL bound ``log n - (n-1)/n`` live in :mod:`rlhf.eval.divergence`.
"""

import datasets
import evaluate
import numpy as np

from rlhf.eval.divergence import best_of_n_curve

_DESCRIPTION = """Expected best-of-n proxy and gold scores over all n-subsets of each prompt's N samples, with the
analytical KL bound of best-of-n sampling."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): per prompt, the proxy score of each of its N samples.
    references (list of list of float): per prompt, the gold score of the same samples.
    ns (list of int, optional): the n to report (default: powers of two up to N, and N).
Returns:
    n, proxy, gold, kl_bound (lists, one entry per n).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BestOfN(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Stiennon et al. 2020; Gao, Schulman and Hilton 2022",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Sequence(datasets.Value("float64"))}),
        )

    def _compute(self, predictions, references, ns=None):
        curve = best_of_n_curve(np.asarray(predictions, dtype=float), np.asarray(references, dtype=float), ns)
        return curve.to_dict()
