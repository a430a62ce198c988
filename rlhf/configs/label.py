"""The preference loop's stage configs: ``label_push``, ``label_simulate`` and ``label_pull``.

Each is a stage config (a YAML file names it with ``stage:``; ``rlhf config keys label_push`` lists every key;
the recipes are :mod:`rlhf.stages.label_push`, :mod:`~rlhf.stages.label_simulate` and
:mod:`~rlhf.stages.label_pull`). All three carry the ``argilla`` and ``service`` sections of ``rlhf label``
(which Argilla to talk to: the embedded service by default) and a ``run`` section (where run folders go, and
the seed).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import RunConfig, StrictModel
from rlhf.labeling.config import ArgillaConfig, ServiceConfig

__all__ = ["HoneypotConfig", "LabelPullConfig", "LabelPushConfig", "LabelSimulateConfig", "QualityThresholds"]

DATASET_NAME = r"^[A-Za-z0-9_.-]+$"
DEFAULT_RUBRIC = "rlhf.world.demo:gold_rubric"


class HoneypotConfig(StrictModel):
    """Records with a known answer, mixed into the round (answers stay in the push folder)."""

    path: str | None = Field(None, description="JSONL of honeypots: {prompt, responses: [{text, rank}]} per line")
    demo: int = Field(0, ge=0, description="demo-world honeypots to add, ordered by honeypots.rubric")
    rubric: str = Field(DEFAULT_RUBRIC, min_length=1,
                        description="module:function (prompt, reply) -> score that orders the demo honeypots; "
                                    "the rubric your annotators follow (label_simulate.rubric for bots)")
    min_gap: float = Field(0.15, gt=0.0, le=1.0, description="least rubric-score gap between demo honeypot responses")
    seed: int = Field(0, description="seed of the demo honeypots (a bank shared by rounds, apart from run.seed)")

    @model_validator(mode="after")
    def _rubric_needs_demo(self) -> HoneypotConfig:
        if "rubric" in self.model_fields_set and self.rubric != DEFAULT_RUBRIC and not self.demo:
            raise ValueError("honeypots.rubric orders demo honeypots only (a honeypots.path file carries its own "
                             "ranks); set honeypots.demo > 0 or remove honeypots.rubric")
        return self


class LabelPushConfig(StrictModel):
    """``rlhf label push``: one collection round as one Argilla dataset."""

    stage: Literal["label_push"] = "label_push"
    run: RunConfig = Field(default_factory=RunConfig)
    candidates: str | None = Field(None, description="generate stage folder (or its candidates.jsonl)")
    dataset: str | None = Field(None, pattern=DATASET_NAME,
                                description="Argilla dataset of this round (default: <run.name>-<fingerprint>)")
    workspace: str = Field("rlhf", min_length=1, description="Argilla workspace (created when missing)")
    template: str = Field("ranking-v2", description="dataset template: a name in rlhf/labeling/dataset_templates or a YAML path")
    min_submitted: int | None = Field(None, ge=1,
                                      description="annotators per record (task distribution); default: the template's")
    max_prompts: int = Field(0, ge=0, description="push at most this many prompts (0: all)")
    scrubber: str = Field("default", description="PII scrubber run again on every text before logging "
                                                 "('default', 'module:function', or 'none')")
    batch_size: int = Field(500, ge=1, le=500, description="records per bulk request (Argilla's limit is 500)")
    honeypots: HoneypotConfig = Field(default_factory=HoneypotConfig)
    argilla: ArgillaConfig = Field(default_factory=ArgillaConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)


class LabelSimulateConfig(StrictModel):
    """``rlhf label simulate``: bot annotators answering a pushed round through the annotator API."""

    stage: Literal["label_simulate"] = "label_simulate"
    run: RunConfig = Field(default_factory=RunConfig)
    push: str | None = Field(None, description="the run folder of the push whose dataset the bots annotate")
    bots: int = Field(3, ge=1, le=100, description="number of bot annotators")
    careless_share: float = Field(0.0, ge=0.0, le=1.0, description="share of bots that rank at random")
    biased_share: float = Field(0.0, ge=0.0, le=1.0, description="share of bots with a slot-A preference")
    position_bias: float = Field(0.8, ge=0.0, le=1.0,
                                 description="biased bots: probability of ranking the slot-A response first")
    noise: float = Field(0.05, ge=0.0, description="std of the Gaussian noise added to rubric scores")
    tie_rate: float = Field(0.02, ge=0.0, lt=1.0,
                            description="probability that two neighbours in a bot's order share a rank")
    rubric: str = Field(DEFAULT_RUBRIC, description="module:function (prompt, reply) -> score")
    username_prefix: str = Field("bot", pattern=r"^[a-z0-9][a-z0-9-]*$",
                                 description="bot usernames: <prefix>-<role>-<i>")
    max_per_bot: int = Field(0, ge=0, description="responses per bot in this run (0: until its queue is empty)")
    batch: int = Field(5, ge=1, le=100, description="records a bot takes from its queue per turn")
    argilla: ArgillaConfig = Field(default_factory=ArgillaConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)

    @model_validator(mode="after")
    def _roles_fit(self) -> LabelSimulateConfig:
        careless, biased = round(self.bots * self.careless_share), round(self.bots * self.biased_share)
        if careless + biased > self.bots:
            raise ValueError(f"careless_share and biased_share ask for {careless} + {biased} bots of {self.bots}; "
                             "lower one of them")
        return self


class QualityThresholds(StrictModel):
    """When the quality report flags an annotator."""

    bias_p: float = Field(0.01, gt=0.0, lt=1.0, description="slot-A binomial test p-value below which to flag")
    careless_agreement: float = Field(0.6, ge=0.0, le=1.0,
                                      description="leave-one-out agreement below which to flag 'careless'")
    honeypot_accuracy: float = Field(0.7, ge=0.0, le=1.0,
                                     description="honeypot accuracy below which to flag 'careless'")


class LabelPullConfig(StrictModel):
    """``rlhf label pull``: a versioned snapshot of the round's responses, pairs and quality report."""

    stage: Literal["label_pull"] = "label_pull"
    run: RunConfig = Field(default_factory=RunConfig)
    push: str | None = Field(None, description="the run folder of the push whose dataset to pull")
    aggregation: Literal["majority", "borda", "bradley_terry"] = Field(
        "majority", description="how annotators' rankings of a record become pairs")
    min_agreement: float = Field(0.5, ge=0.5, lt=1.0, description="keep pairs whose agreement is above this")
    min_votes: int = Field(1, ge=1, description="keep pairs with at least this many votes")
    exclude_flagged: list[Literal["careless", "position_bias"]] = Field(
        default_factory=list, description="leave out of the pairs the votes of annotators flagged so")
    scrubber: str = Field("default", description="PII scrubber run on free-text answers (rationales) on export")
    quality: QualityThresholds = Field(default_factory=QualityThresholds)
    argilla: ArgillaConfig = Field(default_factory=ArgillaConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
