"""The settings of the vLLM rollout engine, and the temperatures it samples at, as a torch-free schema.

Configs (``rollout.vllm`` of PPO, ``vllm`` of ``rlhf generate``) read these at load time without importing
torch or vLLM; the engine itself is :mod:`rlhf.rollout.vllm_engine`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhf.core.config import StrictModel

__all__ = ["VLLMSettings", "check_vllm_temperature"]


class VLLMSettings(StrictModel):
    """How the vLLM engine is built (``rollout.engine=vllm``)."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine spans (tensor parallel)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=0.98, description="fraction of each GPU vLLM may take")
    max_model_len: int | None = Field(None, ge=16, description="longest prompt + reply, with one token to spare "
                                      "for scoring the probe (null: the model's limit)")
    enforce_eager: bool = Field(False, description="skip CUDA graph capture (faster start, slower decoding)")
    enable_prefix_caching: bool = Field(True, description="reuse the KV cache of shared prompt prefixes")
    sleep: Literal["auto", "on", "off"] = Field(
        "auto", description="free the GPU between generations for a learner on the same GPU "
        "(auto: when the rollout role is colocated with the policy)")


def check_vllm_temperature(value: float | None, key: str) -> None:
    """Raise ``ValueError`` for a temperature vLLM would refuse (above 2) or silently raise to 0.01."""
    if value is not None and (value > 2.0 or 0.0 < value < 0.01):
        raise ValueError(f"{key}={value:g} is outside what vLLM samples at (0 for greedy, or 0.01 to 2); "
                         "change it or use the transformers engine")
