"""The ``eval`` stage's config: checkpoints and baseline, prompt set, generation, scorers, statistics, KL and
best-of-n (the stage itself is :mod:`rlhf.stages.eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rlhf.core.config import RunConfig, StrictModel
from rlhf.rollout.sampling import SamplingConfig

__all__ = [
    "BestOfNSettings",
    "EvalConfig",
    "EvalModelSettings",
    "GenerationSettings",
    "JudgeSettings",
    "KLSettings",
    "PolicySpec",
    "PromptSetConfig",
    "RewardModelSpec",
    "ScoringConfig",
    "StatsSettings",
]

NAME_PATTERN = r"^[A-Za-z0-9_.:/-]+$"


class PolicySpec(StrictModel):
    """A model to evaluate: a display name and where it lives (stage folder, model folder, hub id, 'tiny')."""

    name: str = Field(..., pattern=NAME_PATTERN, description="display name in tables and plots")
    path: str = Field(..., description="stage output folder, model folder, hub id, or 'tiny'")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            path = Path(data)
            name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
            return {"name": name or data, "path": data}
        return data


class PromptSetConfig(StrictModel):
    """The fixed evaluation prompt set."""

    path: str | None = Field(None, description="JSONL with 'prompt' (and optional 'id', 'category'); omit for demo prompts")
    demo_count: int = Field(96, ge=2, description="held-out demo-world prompts when no path is given")
    demo_seed: int = Field(90_000, description="seed of the demo prompts; keep it apart from training seeds")
    category: str | None = Field("rlhf.world.demo:intent_of",
                                 description="module:function giving a prompt's category when the file has none")


class GenerationSettings(SamplingConfig):
    """How every policy samples its replies (the shared sampling keys, and how many per prompt)."""

    max_new_tokens: int = Field(96, ge=1, description="longest reply in tokens")
    samples_per_prompt: int = Field(1, ge=1, description="replies per prompt and policy (paired by index)")
    batch_size: int = Field(32, ge=1, description="prompts per generation batch")


class RewardModelSpec(StrictModel):
    """A reward model to score with."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="scorer name (column score/rm/<name>)")
    path: str = Field(..., description="reward stage folder or model folder")


class JudgeSettings(StrictModel):
    """An optional pairwise judge, asked in both slot orders (set at most one of model and callable)."""

    model: str | None = Field(None, description="causal LM (stage folder, model folder or hub id) used as judge")
    callable: str | None = Field(None, description="module:function(prompt, reply_a, reply_b) -> P(A better)")

    @model_validator(mode="after")
    def _one(self) -> JudgeSettings:
        if self.model is not None and self.callable is not None:
            raise ValueError("scoring.judge.model and scoring.judge.callable are both set; keep one")
        return self

    @property
    def enabled(self) -> bool:
        return self.model is not None or self.callable is not None


class ScoringConfig(StrictModel):
    """What scores the replies."""

    rubric: str | None = Field("rlhf.world.demo:gold_rubric", description="module:function gold score (None: no rubric)")
    reward_models: list[RewardModelSpec] = Field(default_factory=list, description="reward models to score with")
    judge: JudgeSettings = Field(default_factory=JudgeSettings, description="optional pairwise judge")
    primary: str | None = Field(None, description="scorer that leads the report: 'gold', 'rm/<name>' or 'judge' "
                                                  "(default: the first reward model, else gold)")
    batch_size: int = Field(16, ge=1, description="sequences per scoring batch")


class StatsSettings(StrictModel):
    """Statistical settings."""

    n_bootstrap: int = Field(2000, ge=200, description="paired bootstrap resamples for win-rate intervals")
    lc_bootstrap: int = Field(1000, ge=200, description="bootstrap resamples for the length-controlled win rate")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="interval level")
    tie_tolerance: float = Field(0.0, ge=0.0, description="score differences up to this count as ties")
    length_unit: Literal["tokens", "chars"] = Field("tokens", description="length used for length control")


class KLSettings(StrictModel):
    """KL to the reference on the policy's own samples."""

    enabled: bool = Field(True, description="estimate KL(policy || reference); needs temperature 1 and top_p 1")


class BestOfNSettings(StrictModel):
    """Best-of-n with a reward model as the proxy, on separate samples."""

    n: int = Field(0, ge=0, description="samples per prompt (0: off); the curve reports n = 1, 2, 4, ... up to it")
    prompts: int = Field(32, ge=1, description="prompts (the first of the set) used for best-of-n")
    policies: list[str] | None = Field(None, description="policy names to run it for (default: the baseline)")
    proxy: str | None = Field(None, description="reward model name used as proxy (default: the first)")


class EvalModelSettings(StrictModel):
    """How models are loaded."""

    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="'auto' uses CUDA when present")


class EvalConfig(StrictModel):
    """Evaluate checkpoints against a baseline."""

    stage: Literal["eval"] = "eval"
    run: RunConfig = Field(default_factory=RunConfig)
    checkpoints: list[PolicySpec] = Field(default_factory=list, description="checkpoints to evaluate, in order")
    baseline: PolicySpec | None = Field(None, description="the policy every checkpoint is compared with")
    reference: str | None = Field(None, description="reference model for KL (default: the baseline)")
    model: EvalModelSettings = Field(default_factory=EvalModelSettings)
    prompts: PromptSetConfig = Field(default_factory=PromptSetConfig)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    stats: StatsSettings = Field(default_factory=StatsSettings)
    kl: KLSettings = Field(default_factory=KLSettings)
    best_of_n: BestOfNSettings = Field(default_factory=BestOfNSettings)
    metrics_dir: str | None = Field(None, description="folder of the evaluate metric modules "
                                                         "(default: the package's rlhf/eval/metrics)")

    @field_validator("checkpoints")
    @classmethod
    def _unique(cls, value: list[PolicySpec]) -> list[PolicySpec]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"checkpoint names {dupes} repeat; give each checkpoint a distinct name")
        return value

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if self.baseline is not None and self.baseline.name in {p.name for p in self.checkpoints}:
            raise ValueError(f"baseline.name '{self.baseline.name}' is also a checkpoint name; rename one")
        if self.kl.enabled and (self.generation.temperature != 1.0 or self.generation.top_p != 1.0):
            raise ValueError("kl.enabled needs generation.temperature=1 and generation.top_p=1 (samples must come "
                             "from the policy itself); set kl.enabled=false or restore them")
        rms = [rm.name for rm in self.scoring.reward_models]
        if len(set(rms)) != len(rms):
            raise ValueError("scoring.reward_models names repeat; give each a distinct name")
        if self.scoring.primary is not None and self.scoring.primary not in self.scorer_names():
            raise ValueError(f"scoring.primary '{self.scoring.primary}' is not a configured scorer "
                             f"({', '.join(self.scorer_names()) or 'none'})")
        if not self.scorer_names():
            raise ValueError("no scorer: set scoring.rubric, scoring.reward_models or scoring.judge")
        if self.best_of_n.n > 0:
            if not rms:
                raise ValueError("best_of_n.n > 0 needs a proxy in scoring.reward_models; add one or set best_of_n.n=0")
            if self.best_of_n.proxy is not None and self.best_of_n.proxy not in rms:
                raise ValueError(f"best_of_n.proxy '{self.best_of_n.proxy}' is not in scoring.reward_models ({rms})")
        names = [p.name for p in self.checkpoints] + ([self.baseline.name] if self.baseline else [])
        unknown = sorted(set(self.best_of_n.policies or []) - set(names))
        if unknown:
            raise ValueError(f"best_of_n.policies {unknown} are not among the baseline and checkpoints ({names})")
        return self

    def scorer_names(self) -> list[str]:
        """Scorers in report order: reward models, gold, judge."""
        names = [f"rm/{rm.name}" for rm in self.scoring.reward_models]
        if self.scoring.rubric:
            names.append("gold")
        if self.scoring.judge.enabled:
            names.append("judge")
        return names

    def primary_scorer(self) -> str:
        """The configured primary scorer, else the first reward model, else gold, else the judge."""
        return self.scoring.primary or self.scorer_names()[0]
