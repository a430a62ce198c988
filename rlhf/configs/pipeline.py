"""The ``pipeline`` stage's config: the round settings and one section per stage, each a partial config of
that stage validated at load against the stage's own model (the stage itself is :mod:`rlhf.stages.pipeline`).

The pipeline sets the wiring keys of each section itself (``run``, input and model paths); setting one of
them in a section is an error that names it.

One default crosses sections: the annotators' rubric is the team's rubric, so when ``label_simulate.rubric``
is set and ``label_push.honeypots.rubric`` is not, the push's demo honeypots are ordered by the bots' rubric
(:func:`honeypot_rubric_default`). Setting ``label_push.honeypots.rubric`` overrides it.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhf.configs.dpo import DPOConfig
from rlhf.configs.eval import EvalConfig
from rlhf.configs.generate import GenerateConfig
from rlhf.configs.label import LabelPullConfig, LabelPushConfig, LabelSimulateConfig
from rlhf.configs.ppo import PPOConfig
from rlhf.configs.prepare import PrepareConfig
from rlhf.configs.report import ReportConfig
from rlhf.configs.rm import RMConfig
from rlhf.configs.sft import SFTConfig
from rlhf.core.config import RunConfig, StrictModel, validate_config
from rlhf.labeling.config import LabelingConfig

__all__ = ["SECTIONS", "SECTION_MODELS", "PipelineConfig", "honeypot_rubric_default"]

# Each section's stage -> its config model (the same as the stage table's, checked by a test).
SECTION_MODELS: dict[str, type[StrictModel]] = {
    "prepare": PrepareConfig, "sft": SFTConfig, "generate": GenerateConfig, "label_push": LabelPushConfig,
    "label_simulate": LabelSimulateConfig, "label_pull": LabelPullConfig, "rm": RMConfig, "ppo": PPOConfig,
    "dpo": DPOConfig, "eval": EvalConfig, "report": ReportConfig, "label": LabelingConfig,
}

# Section -> (stage config name, dotted keys the pipeline sets itself).
SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prepare": ("prepare", ("run",)),
    "sft": ("sft", ("run",)),
    "generate": ("generate", ("run", "prompts.path", "prompts.offset", "policies")),
    "label_push": ("label_push", ("run", "candidates", "service", "argilla")),
    "label_simulate": ("label_simulate", ("run", "push", "service", "argilla")),
    "label_pull": ("label_pull", ("run", "push", "service", "argilla")),
    "rm": ("rm", ("run", "data.path", "data.include", "data.format")),
    "ppo": ("ppo", ("run", "model.name_or_path", "reward.model", "reward.function", "data.path")),
    "dpo": ("dpo", ("run", "model.name_or_path", "data.path", "data.format", "online.reward_model")),
    "eval": ("eval", ("run", "checkpoints", "baseline", "reference", "prompts.path", "scoring.reward_models")),
    "report": ("report", ("run", "eval_dir", "rounds")),
}


_MISSING = object()


def _get(data: dict, dotted: str, default: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _has(data: dict, dotted: str) -> bool:
    return _get(data, dotted, _MISSING) is not _MISSING


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def honeypot_rubric_default(push: dict, simulate: dict) -> dict:
    """The ``label_push`` section with ``honeypots.rubric`` set to ``label_simulate.rubric`` when that is set,
    the push's is not and the push adds demo honeypots (the only ones a rubric orders); else unchanged."""
    rubric = simulate.get("rubric")
    if rubric is None or _has(push, "honeypots.rubric"):
        return push
    if not _validated("label_push", push, "pipeline section 'label_push'").honeypots.demo:
        return push
    out = copy.deepcopy(push)
    _set(out, "honeypots.rubric", rubric)
    return out


class PipelineConfig(StrictModel):
    """A whole RLHF round (or several) on one config."""

    stage: Literal["pipeline"] = "pipeline"
    run: RunConfig = Field(default_factory=lambda: RunConfig(root="runs/quickstart"))
    rounds: int = Field(1, ge=1, le=10, description="collection rounds; each starts from the previous best policy")
    wait_for_humans: bool = Field(False, description="wait for people to rank in the UI instead of simulated bots")
    human_poll_s: float = Field(10.0, gt=0, description="seconds between progress checks while waiting for humans")
    keep_service: bool = Field(False, description="leave the Argilla service running when the pipeline ends")
    sft_stage: bool = Field(True, description="SFT the base model first; false starts from sft.model.name_or_path as it "
                                              "is (an instruct model) and evaluates against it")
    algorithms: list[Literal["ppo", "dpo"]] = Field(default_factory=lambda: ["ppo", "dpo"],
                                                     description="policy optimisers run each round")
    label: dict[str, Any] = Field(default_factory=dict, description="the labeling service (a 'label' config)")
    prepare: dict[str, Any] = Field(default_factory=dict, description="partial prepare config")
    sft: dict[str, Any] = Field(default_factory=dict, description="partial sft config")
    generate: dict[str, Any] = Field(default_factory=dict, description="partial generate config")
    label_push: dict[str, Any] = Field(default_factory=dict, description="partial label_push config")
    label_simulate: dict[str, Any] = Field(default_factory=dict, description="partial label_simulate config")
    label_pull: dict[str, Any] = Field(default_factory=dict, description="partial label_pull config")
    rm: dict[str, Any] = Field(default_factory=dict, description="partial rm config")
    ppo: dict[str, Any] = Field(default_factory=dict, description="partial ppo config")
    dpo: dict[str, Any] = Field(default_factory=dict, description="partial dpo config")
    eval: dict[str, Any] = Field(default_factory=dict, description="partial eval config")
    report: dict[str, Any] = Field(default_factory=dict, description="partial report config")

    @model_validator(mode="after")
    def _sections_validate(self) -> PipelineConfig:
        for section, (stage, wired) in SECTIONS.items():
            data = getattr(self, section)
            for key in wired:
                if _has(data, key):
                    raise ValueError(f"{section}.{key} is set by the pipeline; remove it from the config")
            _validated(stage, self._placeholder(section, self._defaulted(section, data)),
                       f"pipeline section '{section}'")
        _validated("label", self.label, "pipeline section 'label'")
        return self

    def _defaulted(self, section: str, data: dict) -> dict:
        """``data`` with the defaults that come from other sections (module docstring)."""
        if section == "label_push":
            return honeypot_rubric_default(data, self.label_simulate)
        return data

    def _placeholder(self, section: str, data: dict) -> dict:
        """The section with its wiring keys filled by stand-ins, to validate it before anything runs."""
        out = copy.deepcopy(data)
        fills = {"generate": {"policies": [{"name": "p", "path": "tiny"}]},
                 "ppo": {"reward.model": "reward-model"}}
        if section == "dpo" and self.dpo_online():
            fills["dpo"] = {"online.reward_model": "reward-model"}
        for key, value in fills.get(section, {}).items():
            _set(out, key, value)
        return out

    def dpo_online(self) -> bool:
        """Whether the ``dpo`` section switches online DPO on (the round's reward model then labels its pairs)."""
        return bool(_get(self.dpo, "online.enabled", False))

    def sets(self, section: str, dotted: str) -> bool:
        """Whether the config sets ``dotted`` in ``section`` (as opposed to leaving it to a default)."""
        return _has(getattr(self, section), dotted)

    def labeling_config(self) -> LabelingConfig:
        """The labeling service's config (the ``label`` section)."""
        return _validated("label", self.label, "pipeline section 'label'")

    def stage_config(self, section: str, wiring: dict[str, Any], round_no: int):
        """The full config of ``section``'s stage for ``round_no`` with the pipeline's wiring applied."""
        stage, _ = SECTIONS[section]
        data = copy.deepcopy(self._defaulted(section, getattr(self, section)))
        data["run"] = {"root": self.run.root, "name": f"r{round_no}", "seed": self.run.seed}
        for key, value in wiring.items():
            _set(data, key, value)
        return _validated(stage, data, f"pipeline section '{section}'")


def _validated(stage: str, data: dict, source: str):
    return validate_config(SECTION_MODELS[stage], {**data, "stage": stage}, source=source)
