"""The ``generate`` stage's config: the prompts, the policies that write candidates (each with its rollout
engine), the sampling parameters and the vLLM settings (the stage itself is :mod:`rlhf.stages.generate`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import RunConfig, StrictModel
from rlhf.rollout.sampling import SamplingConfig
from rlhf.rollout.vllm_settings import VLLMSettings, check_vllm_temperature

__all__ = ["GenerateConfig", "PolicySpec", "PromptSource", "SamplingConfig"]


class PromptSource(StrictModel):
    """The prompts to answer."""

    path: str | None = Field(None, description="JSONL with 'prompt' (and 'id', 'metadata'), e.g. a prepare stage's "
                                               "prompts/train.jsonl; omit for demo-world prompts")
    limit: int = Field(50, ge=1, description="answer at most this many prompts (file order)")
    offset: int = Field(0, ge=0, description="skip this many prompts first (file order; the pipeline moves it on "
                        "each round, so every round ranks new prompts)")
    human_replies: bool = Field(True, description="a prompt's metadata.human_replies (support staff's answers to "
                                "escalations, from rlhf feedback export) join its candidates as policy 'human'")


class PolicySpec(StrictModel):
    """One policy that writes candidates."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="label stored with each candidate")
    path: str = Field(..., description="model folder, stage folder or hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="'auto' uses CUDA when present")
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="rollout engine: transformers, or vllm (CUDA only, the vllm extra)")


class CandidateSampling(SamplingConfig):
    """The shared sampling keys (the same names as vLLM's), and how many candidates per prompt."""

    n: int = Field(4, ge=1, description="candidates per prompt and policy")
    max_new_tokens: int = Field(96, ge=1, description="longest reply in tokens")


class GenerateConfig(StrictModel):
    """Candidate generation for a collection round."""

    stage: Literal["generate"] = "generate"
    run: RunConfig = Field(default_factory=RunConfig)
    prompts: PromptSource = Field(default_factory=PromptSource)
    policies: list[PolicySpec] = Field(..., min_length=1, description="policies that write candidates")
    sampling: CandidateSampling = Field(default_factory=CandidateSampling)
    batch_size: int = Field(32, ge=1, description="prompts per generation batch")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="vLLM engine settings (engine: vllm)")

    @model_validator(mode="after")
    def _unique_names(self) -> GenerateConfig:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError(f"policies[].name must be unique, got {names}")
        if self.sampling.temperature == 0 and self.sampling.n > 1:
            raise ValueError("sampling.n > 1 with sampling.temperature=0 gives identical candidates; raise the temperature")
        if any(p.engine == "vllm" for p in self.policies):
            check_vllm_temperature(self.sampling.temperature, "sampling.temperature")
        elif "vllm" in self.model_fields_set:
            raise ValueError("vllm settings are set but no policy uses engine: vllm; set policies[].engine=vllm "
                             "or remove vllm")
        return self
