"""The ``eval_human`` stage's config: a blind A/B comparison of two checkpoints of one ``rlhf eval`` run,
annotated in Argilla (``rlhf eval-human push|pull``; the stage itself is :mod:`rlhf.stages.eval_human`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhf.core.config import RunConfig, StrictModel
from rlhf.labeling.config import ArgillaConfig, ServiceConfig

__all__ = ["HumanEvalConfig", "HumanStats"]


class HumanStats(StrictModel):
    """Statistical settings of the merged win rate."""

    n_bootstrap: int = Field(2000, ge=200, description="bootstrap resamples over items")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="interval level")


class HumanEvalConfig(StrictModel):
    """A blind A/B comparison of two checkpoints of one ``rlhf eval`` run, annotated in Argilla."""

    stage: Literal["eval_human"] = "eval_human"
    run: RunConfig = Field(default_factory=RunConfig)
    eval_dir: str | None = Field(None, description="completed eval stage folder holding samples.parquet")
    policy_a: str | None = Field(None, description="checkpoint name shown as A (its win rate is reported)")
    policy_b: str | None = Field(None, description="checkpoint name shown as B (default: the eval's baseline)")
    dataset: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="Argilla dataset name (default: ab-<a>-vs-<b>-<eval id>)")
    workspace: str = Field("evaluation", description="Argilla workspace (created when missing)")
    min_submitted: int = Field(2, ge=1, description="annotators per item (Argilla task distribution overlap)")
    max_items: int = Field(0, ge=0, description="compare at most this many pairs (0: all)")
    stats: HumanStats = Field(default_factory=HumanStats)
    argilla: ArgillaConfig = Field(default_factory=ArgillaConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
