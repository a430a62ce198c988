"""The ``dpo`` stage's config: the pairs, the preference loss, optimisation, DeepSpeed, Ray Train workers and
the held-out evaluation against the reference."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.configs.rm import PairsDataConfig, PreferenceTrainConfig
from rlhf.core.config import RunConfig, StrictModel
from rlhf.eval.heldout import HeldoutConfig
from rlhf.models.config import ModelConfig
from rlhf.trainers.hf import DeepSpeedSettings
from rlhf.trainers.ray_train import TrainerResources, per_device_batch_size

__all__ = ["DPOConfig", "DPOLossConfig", "DPOTrainConfig"]


class DPOLossConfig(StrictModel):
    """Which preference loss and how strongly it is tied to the reference."""

    type: Literal["sigmoid", "robust", "ipo"] = Field("sigmoid", description="sigmoid (DPO), robust (rDPO) or ipo")
    beta: float = Field(0.1, gt=0, description="inverse strength of the KL tie to the reference (IPO: tau)")
    sft_weight: float = Field(0.0, ge=0.0, description="weight of the chosen replies' per-token NLL added to "
                              "the preference loss (RPO; 0: none)")
    label_smoothing: float | Literal["agreement"] = Field(
        0.0, description="robust loss: label-flip probability in [0, 0.5), or 'agreement' for mean(1 - agreement) "
        "of the training pairs")

    @model_validator(mode="after")
    def _check(self) -> DPOLossConfig:
        if isinstance(self.label_smoothing, float) and not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"loss.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.type != "robust" and self.label_smoothing != 0.0:
            raise ValueError(f"loss.label_smoothing only applies to loss.type=robust, not {self.type}; "
                             "set loss.type=robust or remove loss.label_smoothing")
        return self


class DPOTrainConfig(PreferenceTrainConfig):
    """Optimisation settings plus the reference-model handling."""

    lr: float = Field(5e-5, gt=0, description="peak learning rate")
    precompute_ref_log_probs: bool = Field(True, description="compute reference log-probs once before training "
                                           "(no reference model in memory while training)")


class DPOConfig(StrictModel):
    """Offline DPO on preference pairs."""

    stage: Literal["dpo"] = "dpo"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: PairsDataConfig = Field(default_factory=PairsDataConfig)
    loss: DPOLossConfig = Field(default_factory=DPOLossConfig)
    train: DPOTrainConfig = Field(default_factory=DPOTrainConfig)
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    resources: TrainerResources = Field(default_factory=TrainerResources)
    eval: HeldoutConfig = Field(default_factory=HeldoutConfig,
                                description="held-out prompts answered by the DPO policy and the reference, "
                                "compared by the rubric (the same prompts SFT and PPO evaluate)")

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        if self.model.lora.enabled and self.deepspeed.zero_stage == 3:
            raise ValueError("model.lora.enabled with deepspeed.zero_stage=3 is not supported; use zero_stage 0-2")
        if self.data.format == "hh" and self.eval.prompts and self.eval.path is None:
            raise ValueError("eval.prompts draws demo-world prompts, which do not match data.format=hh pairs; set "
                             "eval.prompts=0, or eval.path to a prompt file or prepare stage folder")
        per_device_batch_size(self.train.batch_size, self.resources.num_workers, self.train.grad_accum)
        return self
