"""The ``rm`` stage's config: the pairs, the Bradley-Terry loss, optimisation, DeepSpeed, Ray Train workers
and the evaluation. :class:`PairsDataConfig` and :class:`PreferenceTrainConfig` also serve the ``dpo`` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import RunConfig, StrictModel
from rlhf.models.config import ModelConfig
from rlhf.trainers.hf import DeepSpeedSettings, HFTrainerSettings
from rlhf.trainers.ray_train import TrainerResources, per_device_batch_size

__all__ = ["PairsDataConfig", "PreferenceTrainConfig", "RMConfig", "RMEvalConfig", "RMLossConfig"]


class PairsDataConfig(StrictModel):
    """Where the preference pairs come from and how they are split."""

    path: str | None = Field(None, description="pairs snapshot folder (or its pairs.jsonl), or an HH-RLHF "
                             ".jsonl(.gz) with format=hh; omit for demo-world pairs")
    include: list[str] = Field(default_factory=list, description="more pairs snapshots trained on together with "
                               "data.path (the pipeline passes earlier rounds' snapshots)")
    format: Literal["pairs", "hh"] = Field("pairs", description="'pairs' snapshot or 'hh' (Anthropic HH-RLHF)")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of prompts held out (pairs without split)")
    train_pairs: Literal["all", "best_vs_worst"] = Field(
        "all", description="which training pairs of a prompt to keep: all, or only its best reply over its worst "
        "(rlhf.data.pairs.best_vs_worst; the widest gap, a usual choice for DPO)")
    max_train_pairs: int | None = Field(None, ge=1, description="keep at most this many training pairs (seeded)")
    demo_prompts: int = Field(1000, ge=1, description="demo world: prompts to rank")
    demo_candidates: int = Field(4, ge=2, description="demo world: candidate replies per prompt")
    demo_annotators: int = Field(3, ge=1, description="demo world: simulated honest annotators per prompt")
    demo_noise: float = Field(0.0, ge=0.0, description="demo world: std of each annotator's scoring noise")

    @model_validator(mode="after")
    def _check(self) -> PairsDataConfig:
        demo_keys = {k for k in self.model_fields_set if k.startswith("demo_")}
        if self.path is not None and demo_keys:
            raise ValueError(f"data.{min(demo_keys)} only applies without data.path; remove one of them")
        if self.include and (self.path is None or self.format != "pairs"):
            raise ValueError("data.include adds pairs snapshots to a data.path snapshot (format=pairs); set data.path "
                             "or remove data.include")
        if self.format == "hh" and self.path is None:
            raise ValueError("data.format=hh needs data.path (an HH-RLHF .jsonl or .jsonl.gz file)")
        return self


class RMLossConfig(StrictModel):
    """Bradley-Terry loss options."""

    margin: Literal["none", "agreement", "strength"] = Field("none", description="margin in the loss: none, "
                                                             "scale*(2*agreement-1), or scale*snapshot margin")
    margin_scale: float = Field(1.0, ge=0.0, description="multiplier of the margin")
    center_rewards_coefficient: float | None = Field(None, ge=0.0, description="weight of mean((r_c+r_r)^2) "
                                                     "keeping rewards centred (e.g. 0.01); omit for none")
    batching: Literal["pairs", "prompts"] = Field(
        "pairs", description="'pairs': train.batch_size pairs per step (TRL's RewardTrainer); 'prompts': "
        "train.batch_size prompts per step, each distinct reply scored once and the loss taken over every pair "
        "among them (K candidates cost K forward passes, not 2 per pair; rlhf.trainers.grouped_reward)")


class PreferenceTrainConfig(HFTrainerSettings):
    """Optimisation, logging and memory settings (the batch is global: split over Ray workers and accumulation
    steps)."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    epochs: float = Field(1.0, gt=0, description="passes over the training pairs (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: use epochs)")
    batch_size: int = Field(32, ge=1, description="global batch of pairs per optimiser step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(256, ge=16, description="longest tokenised prompt+reply; longer pairs are dropped")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="linear warm-up share of the steps")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    logging_steps: int = Field(10, ge=1, description="log every N steps")
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps (resume point after a crash)")
    eval_steps: int = Field(0, ge=0, description="log the loss on held-out pairs every N steps (0: not during "
                            "training)")

    def optimiser_arguments(self) -> dict:
        """The keyword arguments of :func:`rlhf.trainers.ray_train.trainer_arguments` this section sets."""
        return {"lr": self.lr, "epochs": self.epochs, "max_steps": self.max_steps, "grad_accum": self.grad_accum,
                "warmup_ratio": self.warmup_ratio, "weight_decay": self.weight_decay,
                "lr_scheduler": self.lr_scheduler, "max_grad_norm": self.max_grad_norm,
                "logging_steps": self.logging_steps, "save_steps": self.save_steps, "extra": self.trainer_arguments()}


class RMEvalConfig(StrictModel):
    """Evaluation written to eval.json after training."""

    agreement_edges: list[float] = Field([0.5, 0.7, 0.9, 1.0], description="agreement bucket edges (lo, hi]")
    calibration_bins: int = Field(10, ge=1, description="probability bins of the ECE")
    stats_max_responses: int = Field(2000, ge=10, description="training responses scored for reward_stats.json")
    best_of_n: list[int] = Field([1, 2, 4, 8, 16], description="n values of the best-of-n curve (divide the largest)")
    best_of_n_prompts: int | None = Field(None, ge=0, description="held-out demo-world prompts of the best-of-n "
                                          "curve, each with demo-world candidates (default 64; 0 with format=hh)")
    batch_size: int = Field(64, ge=1, description="scoring batch size")

    @model_validator(mode="after")
    def _check(self) -> RMEvalConfig:
        if self.best_of_n and any(max(self.best_of_n) % n for n in self.best_of_n):
            raise ValueError(f"eval.best_of_n values must divide the largest one, got {self.best_of_n}")
        return self


class RMConfig(StrictModel):
    """Reward-model training on preference pairs."""

    stage: Literal["rm"] = "rm"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: PairsDataConfig = Field(default_factory=PairsDataConfig)
    loss: RMLossConfig = Field(default_factory=RMLossConfig)
    train: PreferenceTrainConfig = Field(default_factory=PreferenceTrainConfig)
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    resources: TrainerResources = Field(default_factory=TrainerResources)
    eval: RMEvalConfig = Field(default_factory=RMEvalConfig)

    @model_validator(mode="after")
    def _check(self) -> RMConfig:
        if self.model.lora.enabled and self.deepspeed.zero_stage == 3:
            raise ValueError("model.lora.enabled with deepspeed.zero_stage=3 is not supported; use zero_stage 0-2")
        if self.data.format == "hh" and self.loss.margin == "strength":
            raise ValueError("loss.margin=strength needs pair strengths, which data.format=hh lacks; use none")
        if self.data.format == "hh" and self.eval.best_of_n_prompts:
            raise ValueError("eval.best_of_n_prompts needs the demo world; set it to 0 with data.format=hh")
        per_device_batch_size(self.train.batch_size, self.resources.num_workers, self.train.grad_accum)
        return self
