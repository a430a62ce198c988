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

import importlib
from typing import TYPE_CHECKING, Any

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

_MODULE_OF = {
    "EngineKind": "engines", "open_engine": "engines", "SamplingConfig": "sampling",
    "PackedSequences": "sequences", "pack_sequences": "sequences", "position_ids": "sequences",
    "response_logprobs": "sequences", "TransformersRolloutEngine": "transformers_engine",
    "load_named_tensors": "transformers_engine", "NamedTensors": "types", "RolloutEngine": "types",
    "RolloutSample": "types", "SamplingParams": "types", "VLLMRolloutEngine": "vllm_engine",
    "VLLMSettings": "vllm_settings",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'rlhf.rollout' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rlhf.rollout.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
