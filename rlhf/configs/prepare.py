"""The ``prepare`` stage's config: where the prompts come from, PII scrubbers, deduplication, the split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import RunConfig, StrictModel

__all__ = ["DedupConfig", "PrepareConfig", "SourceConfig", "SplitConfig"]


class SourceConfig(StrictModel):
    """Where the prompts come from."""

    kind: Literal["file", "demo", "hh"] = Field("demo", description="file (jsonl/csv/parquet/saved dataset), demo world, or hh pairs")
    path: str | None = Field(None, description="input file or folder (file and hh kinds)")
    prompt_field: str = Field("prompt", description="column holding the prompt (file kind)")
    demo_prompts: int = Field(600, ge=1, description="demo-world prompts to generate (demo kind)")

    @model_validator(mode="after")
    def _path_matches_kind(self) -> SourceConfig:
        if self.kind in ("file", "hh") and not self.path:
            raise ValueError(f"source.kind={self.kind} needs source.path")
        if self.kind == "demo" and self.path:
            raise ValueError("source.path is set but source.kind is 'demo'; set source.kind=file or remove source.path")
        return self


class DedupConfig(StrictModel):
    """Duplicate removal."""

    enabled: bool = Field(True, description="remove exact and near duplicates")
    near: bool = Field(True, description="also remove near duplicates (MinHash/LSH over character 5-grams)")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity at which prompts are near duplicates")


class SplitConfig(StrictModel):
    """Train/eval split (deterministic; near-duplicate clusters stay on one side)."""

    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of clusters held out for evaluation")


class PrepareConfig(StrictModel):
    """Prompt-set preparation."""

    stage: Literal["prepare"] = "prepare"
    run: RunConfig = Field(default_factory=RunConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    pii: list[str] = Field(default_factory=lambda: ["default"],
                           description="scrubbers applied in order: 'default', 'none' or module:function")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
