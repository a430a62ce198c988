"""The ``report`` stage's config: the eval folder, earlier rounds, human A/B results, title, examples, the PDF."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhf.core.config import RunConfig, StrictModel

__all__ = ["ReportConfig", "ReportSamples"]


class ReportSamples(StrictModel):
    """Side-by-side examples per checkpoint."""

    per_kind: int = Field(5, ge=0, le=50, description="examples of each kind (largest wins, largest losses, random)")
    seed: int = Field(0, description="seed of the random examples")


class ReportConfig(StrictModel):
    """Render the evaluation report."""

    stage: Literal["report"] = "report"
    run: RunConfig = Field(default_factory=RunConfig)
    eval_dir: str | None = Field(None, description="completed eval stage folder")
    human: list[str] = Field(default_factory=list, description="human_eval.json files from 'rlhf eval-human pull'")
    rounds: list[str] = Field(default_factory=list, description="eval folders of earlier rounds, oldest first: adds "
                              "a table of the rounds side by side (this report's eval_dir is the last round)")
    title: str = Field("Checkpoint evaluation", min_length=1, description="report title")
    samples: ReportSamples = Field(default_factory=ReportSamples)
    pdf: bool = Field(False, description="also print report.pdf with headless Chromium")
    chromium: str = Field("chromium", description="Chromium executable for the PDF (name on PATH or a path)")
