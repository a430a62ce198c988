"""Rollout engines: sample replies with log-probs, take new weights, score given tokens.

* :mod:`rlhf.rollout.types`: :class:`SamplingParams`, :class:`RolloutSample`, the :class:`RolloutEngine` protocol.
* :mod:`rlhf.rollout.sampling`: :class:`SamplingConfig`, the sampling schema of every config (no torch).
* :mod:`rlhf.rollout.sequences`: the prompt+response token layout and per-token log-probs over it.
* :mod:`rlhf.rollout.containers`: the typed batches that travel between the controller and the roles.
* :mod:`rlhf.rollout.transformers_engine`: :class:`TransformersRolloutEngine` (batched ``generate``, KV cache).
* :mod:`rlhf.rollout.vllm_engine`: :class:`VLLMRolloutEngine` (vLLM on CUDA, imported lazily), its settings
  :mod:`rlhf.rollout.vllm_settings` (no torch) and its worker-side half :mod:`rlhf.rollout.vllm_worker`.
* :mod:`rlhf.rollout.engines`: :func:`open_engine`, an engine by name.

Importing this package imports no torch: the names below load their module on first use (PEP 562), so a
config that reads :mod:`.sampling` or :mod:`.vllm_settings` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from rlhf.rollout.engines import EngineKind, open_engine
    from rlhf.rollout.sampling import SamplingConfig
    from rlhf.rollout.sequences import PackedSequences, pack_sequences, position_ids, response_logprobs
    from rlhf.rollout.transformers_engine import TransformersRolloutEngine, load_named_tensors
    from rlhf.rollout.types import NamedTensors, RolloutEngine, RolloutSample, SamplingParams
    from rlhf.rollout.vllm_engine import VLLMRolloutEngine
    from rlhf.rollout.vllm_settings import VLLMSettings

__all__ = [
    "EngineKind",
    "NamedTensors",
    "PackedSequences",
    "RolloutEngine",
    "RolloutSample",
    "SamplingConfig",
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

_MODULES: dict[str, tuple[str, ...]] = {
    "engines": ("EngineKind", "open_engine"),
    "sampling": ("SamplingConfig",),
    "sequences": ("PackedSequences", "pack_sequences", "position_ids", "response_logprobs"),
    "transformers_engine": ("TransformersRolloutEngine", "load_named_tensors"),
    "types": ("NamedTensors", "RolloutEngine", "RolloutSample", "SamplingParams"),
    "vllm_engine": ("VLLMRolloutEngine",),
    "vllm_settings": ("VLLMSettings",),
}


__getattr__, __dir__ = lazy_attributes(globals(), _MODULES)
