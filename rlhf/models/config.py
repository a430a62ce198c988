"""Configuration sections shared by every stage that loads a model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import StrictModel

__all__ = ["TINY", "LoraSettings", "ModelConfig", "TinyModelConfig"]

TINY = "tiny"


class TinyModelConfig(StrictModel):
    """A Llama-style model of a few million parameters, built from this config by committed code."""

    vocab_size: int = Field(2048, ge=300, le=65536, description="BPE vocabulary size of the locally trained tokenizer")
    hidden_size: int = Field(192, ge=16, description="hidden width")
    num_layers: int = Field(4, ge=1, description="transformer blocks")
    num_heads: int = Field(4, ge=1, description="attention heads (must divide hidden_size)")
    intermediate_size: int = Field(512, ge=16, description="MLP width")
    max_position_embeddings: int = Field(512, ge=64, description="longest sequence the model takes")
    tokenizer_corpus_size: int = Field(4000, ge=100, description="demo-world examples the tokenizer is trained on")
    seed: int = Field(0, description="seed of the tokenizer corpus and the weight initialisation")

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"tiny.hidden_size ({self.hidden_size}) must be divisible by tiny.num_heads ({self.num_heads})")
        return self


class LoraSettings(StrictModel):
    """PEFT LoRA adapters (off by default: the tiny model trains all weights)."""

    enabled: bool = Field(False, description="train LoRA adapters instead of all weights")
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA alpha")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="modules that get adapters "
                                                              "('all-linear': every linear layer but the output head, "
                                                              "found by architecture)")
    save: Literal["both", "merged", "adapter"] = Field(
        "both", description="'both': merged weights in model/ and the PEFT adapter in adapter/; 'merged': model/ "
        "only; 'adapter': model/ holds the adapter alone (loaded on its base through PEFT; not for vLLM)")

    @property
    def saved(self) -> Literal["both", "merged", "adapter"] | None:
        """What a trained model keeps of its adapters: ``save`` with LoRA on, None without LoRA."""
        return self.save if self.enabled else None


class ModelConfig(StrictModel):
    """Which model to load and how: a hub id, a local path, or 'tiny' for the built-in tiny model."""

    name_or_path: str = Field(TINY, description="hub id, local path, a stage output folder, a .gguf file, or 'tiny'")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="tiny-model shape (only with 'tiny')")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="'auto' uses CUDA when present")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA adapters")

    @model_validator(mode="after")
    def _tiny_only_with_tiny(self) -> ModelConfig:
        if self.name_or_path != TINY and "tiny" in self.model_fields_set:
            raise ValueError(f"model.tiny is set but model.name_or_path is '{self.name_or_path}', not 'tiny'; "
                             "remove model.tiny or set model.name_or_path=tiny")
        if self.device == "cpu" and self.dtype == "float16":
            raise ValueError("model.dtype=float16 is not supported with model.device=cpu; use float32 or bfloat16")
        return self
