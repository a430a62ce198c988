"""Rollout engines: sample replies with log-probs, take new weights, score given tokens.

* :mod:`rlhf.rollout.types`: :class:`SamplingParams`, :class:`RolloutSample`, the :class:`RolloutEngine` protocol.
* :mod:`rlhf.rollout.sequences`: the prompt+response token layout and per-token log-probs over it.
* :mod:`rlhf.rollout.transformers_engine`: :class:`TransformersRolloutEngine` (batched ``generate``, KV cache).
"""

from rlhf.rollout.sequences import PackedSequences, pack_sequences, position_ids, response_logprobs
from rlhf.rollout.transformers_engine import TransformersRolloutEngine, load_named_tensors
from rlhf.rollout.types import NamedTensors, RolloutEngine, RolloutSample, SamplingParams

__all__ = [
    "NamedTensors",
    "PackedSequences",
    "RolloutEngine",
    "RolloutSample",
    "SamplingParams",
    "TransformersRolloutEngine",
    "load_named_tensors",
    "pack_sequences",
    "position_ids",
    "response_logprobs",
]
