"""Build a rollout engine by name: ``transformers`` (CPU or GPU) or ``vllm`` (CUDA, the ``vllm`` extra)."""

from __future__ import annotations

from typing import Literal

from rlhf.core.errors import UserError
from rlhf.rollout.types import RolloutEngine
from rlhf.rollout.vllm_settings import VLLMSettings

__all__ = ["EngineKind", "open_engine"]

EngineKind = Literal["transformers", "vllm"]


def open_engine(kind: EngineKind, model_path: str, dtype: str = "float32", device: str = "auto",
                batch_size: int = 32, vllm: VLLMSettings | None = None, sleep: bool = False) -> RolloutEngine:
    """The engine ``kind`` over the model at ``model_path``.

    ``batch_size`` and ``device`` apply to the transformers engine (vLLM batches by itself and uses the
    GPUs Ray gave the process); ``vllm`` and ``sleep`` to the vLLM engine.
    """
    if kind == "transformers":
        if vllm is not None or sleep:
            raise UserError("vLLM settings were given for the transformers engine; set the engine to vllm "
                            "or remove the vllm settings")
        from rlhf.rollout.transformers_engine import TransformersRolloutEngine

        return TransformersRolloutEngine.from_pretrained(model_path, dtype=dtype, device=device, batch_size=batch_size)
    if kind == "vllm":
        if device == "cpu":
            raise UserError("the vllm engine runs on CUDA only, but device is 'cpu'; use the transformers engine")
        from rlhf.rollout.vllm_engine import VLLMRolloutEngine

        return VLLMRolloutEngine.from_pretrained(model_path, vllm, dtype=dtype, sleep=sleep)
    raise UserError(f"unknown rollout engine '{kind}'; use 'transformers' or 'vllm'")
