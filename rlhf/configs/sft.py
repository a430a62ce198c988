"""The ``sft`` stage's config: the corpus, optimisation, DeepSpeed and the held-out evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import RunConfig, StrictModel
from rlhf.eval.heldout import HeldoutConfig
from rlhf.models.config import ModelConfig
from rlhf.trainers.hf import DeepSpeedSettings, HFTrainerSettings

__all__ = ["SFTConfig", "SFTDataConfig", "SFTTrainConfig"]


class SFTDataConfig(StrictModel):
    """The training corpus."""

    path: str | None = Field(None, description="JSONL with 'prompt' and 'completion' (text); omit for the demo world")
    demo_examples: int = Field(6000, ge=10, description="demo-world examples when no path is given")
    demo_good_fraction: float = Field(0.5, ge=0.0, le=1.0, description="per-axis chance of a good reply in the demo corpus")


class SFTTrainConfig(HFTrainerSettings):
    """Optimisation, logging and memory settings."""

    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    epochs: float = Field(3.0, gt=0, description="passes over the corpus (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: use epochs)")
    batch_size: int = Field(32, ge=1, description="per-device batch size")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(192, ge=16, description="longest tokenised example; longer ones are truncated")
    group_by_length: bool = Field(False, description="batch examples of similar length (transformers' "
                                  "LengthGroupedSampler: shuffled, then sorted within blocks of 50 batches): a "
                                  "batch pads less, but its gradient comes from alike examples (on the demo "
                                  "corpus: a third less time, and a weaker policy); false: a uniform shuffle")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="linear warm-up share of the steps")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    logging_steps: int = Field(10, ge=1, description="log every N steps")
    save_steps: int = Field(100, ge=1, description="checkpoint every N steps (resume point after a crash)")


class SFTConfig(StrictModel):
    """Supervised fine-tuning of the base policy."""

    stage: Literal["sft"] = "sft"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    train: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    eval: HeldoutConfig = Field(default_factory=HeldoutConfig,
                                description="held-out prompts sampled after training to report the gold-score "
                                "spread (the same prompts DPO and PPO evaluate)")

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        if self.data.path is not None and "demo_examples" in self.data.model_fields_set:
            raise ValueError("data.demo_examples only applies without data.path; remove one of them")
        return self
