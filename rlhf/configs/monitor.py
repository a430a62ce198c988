"""The config of ``rlhf monitor`` (:class:`MonitorConfig`): which store and time window to report on, the
reward model that scores the window's replies, the evaluation whose scores are the drift reference, and the
alert thresholds (the recipe: :mod:`rlhf.stages.monitor`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import StrictModel
from rlhf.serving.settings import StoreSettings

__all__ = ["AlertSettings", "BaselineSettings", "MonitorConfig", "ScoringSettings", "WindowSettings"]


class WindowSettings(StrictModel):
    """The time window reported on: the replies created in it, with every feedback event they drew so far."""

    since_hours: float = Field(24.0, gt=0, description="window start, in hours before 'until'")
    until: float | None = Field(None, description="window end as a Unix time (default: now)")


class ScoringSettings(StrictModel):
    """How the reward model is loaded and run on the window's replies."""

    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="reward model weights dtype")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="'auto' uses CUDA when present")
    batch_size: int = Field(16, ge=1, description="replies scored per forward pass")


class BaselineSettings(StrictModel):
    """The evaluation of the served checkpoint whose reward-model scores are the drift reference."""

    eval_dir: str | None = Field(None, description="an 'rlhf eval' stage folder (holds samples.parquet); "
                                                   "omit for no drift section")
    policy: str | None = Field(None, description="the policy name inside that eval whose scores are the reference "
                                                 "(the served checkpoint's name there)")
    reward_model: str | None = Field(None, description="the eval's reward-model name (its score/rm/<name> column; "
                                                       "default: the only one)")

    @model_validator(mode="after")
    def _policy(self) -> BaselineSettings:
        if self.eval_dir is not None and not self.policy:
            raise ValueError("baseline.eval_dir is set but baseline.policy is not; name the served checkpoint's "
                             "policy in that eval (e.g. baseline.policy=dpo)")
        return self


class AlertSettings(StrictModel):
    """Thresholds over the window's overall figures; an alert fires when a figure is above its threshold
    (``rm_drift``: when the mean moved by more than that many baseline standard deviations, either way).
    ``null`` turns an alert off."""

    latency_p95_ms: float | None = Field(5000.0, gt=0, description="95th-percentile reply latency in ms")
    error_rate: float | None = Field(0.05, ge=0, le=1, description="share of HTTP requests answered >= 400")
    thumbs_down_rate: float | None = Field(0.2, ge=0, le=1, description="share of replies with a thumbs-down")
    escalation_rate: float | None = Field(0.1, ge=0, le=1, description="share of replies escalated or followed "
                                                                       "by an ask for a human")
    rm_drift: float | None = Field(0.5, gt=0, description="|served RM mean - baseline mean| / baseline std")


class MonitorConfig(StrictModel):
    """An HTML report of the served model over a time window: latency, errors, feedback, flags, RM drift, alerts."""

    stage: Literal["monitor"] = "monitor"
    store: StoreSettings = Field(default_factory=StoreSettings)
    abandon_after_s: float = Field(1800.0, gt=0, description="a conversation whose last reply got thumbs-down or a "
                                   "rephrase and no message since is abandoned after this many seconds")
    window: WindowSettings = Field(default_factory=WindowSettings)
    reward_model: str | None = Field(None, description="reward model (RM stage folder or model folder) that scores "
                                                       "every reply of the window without a score; the scores are "
                                                       "saved in the store (normalised with its reward_stats.json)")
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    baseline: BaselineSettings = Field(default_factory=BaselineSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    samples: int = Field(20, ge=0, description="replies with negative feedback or flags shown in the report")
    out: str | None = Field(None, description="HTML file to write, its figures beside it as .json (default: "
                                              "monitor/monitor-<UTC until>.html beside a SQLite store, else "
                                              "runs/serve/monitor/)")
