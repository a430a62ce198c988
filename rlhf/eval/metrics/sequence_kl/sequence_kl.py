"""Sequence-level Monte Carlo KL(policy || reference) on the policy's own samples.

``predictions`` are the summed log-probabilities of each sampled reply under the policy, ``references``
the same replies' log-probabilities under the reference model. The estimator (mean log-ratio, standard
error, per-token KL) lives in :mod:`rlhf.eval.divergence`; this module adapts it to ``evaluate``.
"""

import datasets
import evaluate

from rlhf.eval.divergence import sequence_kl

_DESCRIPTION = """KL(pi || ref) estimated as the mean of log pi(y|x) - log ref(y|x) over replies y sampled from
pi at temperature 1, with its standard error and the KL per reply token."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): log pi(y|x) of each sampled reply (nats, summed over its tokens).
    references (list of float): log ref(y|x) of the same replies.
    lengths (list of int, optional): reply lengths in tokens, for the per-token KL.
Returns:
    kl, stderr, kl_per_token (NaN without lengths), n.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SequenceKL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("float64"),
                                        "references": datasets.Value("float64")}),
        )

    def _compute(self, predictions, references, lengths=None):
        return sequence_kl(predictions, references, lengths).to_dict()
