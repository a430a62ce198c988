"""The ``dpo`` stage's config: the pairs, the preference loss, optimisation, online sampling (``online``),
DeepSpeed, Ray Train workers and the held-out evaluation against the reference."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.configs.rm import PairsDataConfig, PreferenceTrainConfig
from rlhf.core.config import RunConfig, StrictModel
from rlhf.eval.heldout import HeldoutConfig
from rlhf.models.config import ModelConfig
from rlhf.trainers.hf import DeepSpeedSettings
from rlhf.trainers.ray_train import TrainerResources, per_device_batch_size

__all__ = ["DPOConfig", "DPOLossConfig", "DPOTrainConfig", "OnlineDPOSettings"]


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


class OnlineDPOSettings(StrictModel):
    """Online DPO: the policy samples two replies per training prompt, the reward model ranks them, and the DPO
    loss trains on that pair (TRL's OnlineDPOTrainer). Off by default: offline DPO on the snapshot's pairs."""

    enabled: bool = Field(False, description="train online on reward-model-ranked samples instead of the pairs")
    reward_model: str | None = Field(None, description="RM stage folder (runs/rm/<name>-<fingerprint>) or its "
                                     "model/ folder; needs model/reward_stats.json (scores are divided by its std)")
    prompts: int = Field(1000, ge=1, description="at most this many distinct training prompts of the pairs "
                         "(data.path, data.include or demo pairs; seeded sample, held-out prompts left out)")
    max_new_tokens: int = Field(96, ge=1, description="longest sampled reply in tokens (eval.sampling's default)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the two replies")
    missing_eos_penalty: float | None = Field(None, gt=0, description="subtracted from the score of a reply that "
                                              "hits max_new_tokens without ending, in RM std units (omit: none)")


class DPOConfig(StrictModel):
    """DPO: offline on preference pairs, or online (``online.enabled``) on pairs the policy samples and a reward
    model ranks."""

    stage: Literal["dpo"] = "dpo"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: PairsDataConfig = Field(default_factory=PairsDataConfig)
    loss: DPOLossConfig = Field(default_factory=DPOLossConfig)
    train: DPOTrainConfig = Field(default_factory=DPOTrainConfig)
    online: OnlineDPOSettings = Field(default_factory=OnlineDPOSettings)
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
        self._check_online()
        return self

    def _check_online(self) -> None:
        """Settings that only apply offline are refused online, and ``online.*`` keys only apply online."""
        online = self.online
        if not online.enabled:
            stray = sorted(online.model_fields_set - {"enabled"})
            if stray:
                raise ValueError(f"online.{stray[0]} only applies with online.enabled=true; set online.enabled=true "
                                 f"or remove online.{stray[0]}")
            return
        if online.reward_model is None:
            raise ValueError("online.enabled needs online.reward_model (an RM stage folder or its model/ folder)")
        offline_only = {
            "data.train_pairs=best_vs_worst": self.data.train_pairs == "best_vs_worst",
            "data.max_train_pairs": self.data.max_train_pairs is not None,
            "loss.sft_weight": self.loss.sft_weight > 0,
            "train.eval_steps": self.train.eval_steps > 0,
            "train.precompute_ref_log_probs": "precompute_ref_log_probs" in self.train.model_fields_set,
        }
        for key, set_here in offline_only.items():
            if set_here:
                raise ValueError(f"{key} only applies to offline DPO (online trains on freshly sampled replies, "
                                 "not the snapshot's pairs); remove it or set online.enabled=false")
        if self.loss.type == "robust":
            raise ValueError("loss.type=robust is not supported online (TRL's online trainer has sigmoid and ipo); "
                             "use loss.type=sigmoid or ipo")
        if online.max_new_tokens >= self.train.max_length:
            raise ValueError(f"online.max_new_tokens ({online.max_new_tokens}) must be below train.max_length "
                             f"({self.train.max_length}), which holds the prompt and the reply")
