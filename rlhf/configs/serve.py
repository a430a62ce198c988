"""The configs of the serving loop: ``rlhf serve`` (:class:`ServeConfig`), ``rlhf feedback export|forget``
(:class:`FeedbackConfig`); their sections live in :mod:`rlhf.serving.settings` (the recipes:
:mod:`rlhf.stages.serve`, :mod:`rlhf.stages.feedback`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhf.core.config import StrictModel
from rlhf.serving.settings import (
    AuthSettings,
    DeploymentSettings,
    GuardSettings,
    HTTPSettings,
    LimitSettings,
    ServedModel,
    SignalSettings,
    StoreSettings,
)

__all__ = ["ExportSettings", "FeedbackConfig", "RaySettings", "ServeConfig"]


class RaySettings(StrictModel):
    """The Ray cluster Serve runs on."""

    address: str | None = Field(None, description="Ray address to join (default: $RAY_ADDRESS, else a local Ray)")
    num_cpus: int = Field(2, ge=1, description="CPUs of a local Ray started for serving")
    object_store_mb: int = Field(256, ge=75, description="object store of a local Ray")


class ServeConfig(StrictModel):
    """A checkpoint behind an OpenAI-compatible API on Ray Serve, with feedback, guardrails and metrics."""

    stage: Literal["serve"] = "serve"
    model: ServedModel = Field(default_factory=ServedModel)
    deployment: DeploymentSettings = Field(default_factory=DeploymentSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    guards: GuardSettings = Field(default_factory=GuardSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    def sections(self) -> dict:
        """What the Serve replicas are built from (plain dicts cross into the replicas)."""
        return {name: getattr(self, name).model_dump() for name in
                ("model", "deployment", "limits", "auth", "store", "guards", "signals")}


class ExportSettings(StrictModel):
    """Which window of feedback becomes the next round's prompts, and where it is written."""

    out: str | None = Field(None, description="JSONL to write (default: exports/feedback-<until>.jsonl beside a "
                                              "SQLite store, else runs/serve/exports/)")
    since_hours: float = Field(168.0, gt=0, description="window start, in hours before 'until'")
    until: float | None = Field(None, description="window end as a Unix time (default: now)")


class FeedbackConfig(StrictModel):
    """Export a window of feedback as prompts, or erase a user's data."""

    stage: Literal["feedback"] = "feedback"
    store: StoreSettings = Field(default_factory=StoreSettings)
    abandon_after_s: float = Field(1800.0, gt=0, description="a conversation whose last reply got thumbs-down or a "
                                   "rephrase and no message since is abandoned after this many seconds")
    export: ExportSettings = Field(default_factory=ExportSettings)
    user: str | None = Field(None, description="the user id whose data 'forget' erases (rlhf feedback forget USER)")
