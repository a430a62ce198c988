"""Rollout engines: sample replies with log-probs, take new weights, score given tokens.

* :mod:`rlhf.rollout.types`: :class:`SamplingParams`, :class:`RolloutSample`, the :class:`RolloutEngine` protocol.
* :mod:`rlhf.rollout.sequences`: the prompt+response token layout and per-token log-probs over it.
* :mod:`rlhf.rollout.transformers_engine`: :class:`TransformersRolloutEngine` (batched ``generate``, KV cache).
* :mod:`rlhf.rollout.vllm_engine`: :class:`VLLMRolloutEngine` (vLLM on CUDA, imported lazily) and its
  worker-side half :mod:`rlhf.rollout.vllm_worker`.
* :mod:`rlhf.rollout.engines`: :func:`open_engine`, an engine by name.
"""

from rlhf.rollout.engines import EngineKind, open_engine
from rlhf.rollout.sequences import PackedSequences, pack_sequences, position_ids, response_logprobs
from rlhf.rollout.transformers_engine import TransformersRolloutEngine, load_named_tensors
from rlhf.rollout.types import NamedTensors, RolloutEngine, RolloutSample, SamplingParams
from rlhf.rollout.vllm_engine import VLLMRolloutEngine, VLLMSettings

__all__ = [
    "EngineKind",
    "NamedTensors",
    "PackedSequences",
    "RolloutEngine",
    "RolloutSample",
    "SamplingParams",
    "TransformersRolloutEngine",
    "VLLMRolloutEngine",
    "VLLMSettings",
    "load_named_tensors",
    "open_engine",
    "pack_sequences",
    "position_ids",
    "response_logprobs",
]
