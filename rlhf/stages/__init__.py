"""The pipeline's stages: one recipe file per stage, and :data:`STAGES`, the one table of them.

The command line (``rlhf --help``, ``rlhf train``, ``rlhf label``), ``rlhf submit``, ``rlhf pipeline`` and
config validation all read :data:`STAGES`; nothing registers itself by being imported. Each row names the
stage's config model and run function as ``module:attribute`` and imports them only when asked, so listing
the stages (and ``--help``) imports neither torch nor a recipe.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.core.config import ConfigError, StrictModel, read_config, validate_config

__all__ = ["STAGES", "Stage", "config_class", "load_config", "stage", "stage_names"]


@dataclass(frozen=True)
class Stage:
    """One stage: the ``stage:`` key of its YAML files, the ``rlhf`` words that run it, and where its
    config model and run function live (``module:attribute``)."""

    name: str
    command: tuple[str, ...]
    config: str
    run: str | None
    help: str
    submit: bool = False  # runs as a Ray job with ``rlhf submit``

    def config_class(self) -> type[StrictModel]:
        return _attribute(self.config)

    def run_function(self):
        if self.run is None:
            raise ConfigError(f"stage '{self.name}' has no run function; use 'rlhf {' '.join(self.command)}'")
        return _attribute(self.run)


STAGES: tuple[Stage, ...] = (
    Stage("prepare", ("prepare",), "rlhf.configs.prepare:PrepareConfig", "rlhf.stages.prepare:run_prepare",
          "prompts: scrub PII, deduplicate, split", submit=True),
    Stage("sft", ("train", "sft"), "rlhf.configs.sft:SFTConfig", "rlhf.stages.sft:run_sft",
          "supervised fine-tuning of the base policy (TRL SFTTrainer)", submit=True),
    Stage("generate", ("generate",), "rlhf.configs.generate:GenerateConfig", "rlhf.stages.generate:run_generate",
          "sample K candidate replies per prompt from one or more policies", submit=True),
    Stage("label_push", ("label", "push"), "rlhf.configs.label:LabelPushConfig", "rlhf.stages.label_push:run_push",
          "push a generate stage's candidates as one ranking dataset (a round)"),
    Stage("label_simulate", ("label", "simulate"), "rlhf.configs.label:LabelSimulateConfig",
          "rlhf.stages.label_simulate:run_simulate",
          "bot annotators (honest, careless, position-biased) rank a round"),
    Stage("label_pull", ("label", "pull"), "rlhf.configs.label:LabelPullConfig", "rlhf.stages.label_pull:run_pull",
          "snapshot a round: raw responses, training pairs, quality report"),
    Stage("rm", ("train", "rm"), "rlhf.configs.rm:RMConfig", "rlhf.stages.rm:run_reward_model",
          "reward model on preference pairs (TRL RewardTrainer under Ray Train)", submit=True),
    Stage("dpo", ("train", "dpo"), "rlhf.configs.dpo:DPOConfig", "rlhf.stages.dpo:run_dpo",
          "offline DPO on preference pairs (TRL DPOTrainer under Ray Train)", submit=True),
    Stage("ppo", ("train", "ppo"), "rlhf.configs.ppo:PPOConfig", "rlhf.stages.ppo:run_ppo",
          "policy optimisation under Ray: PPO, GRPO, RLOO, REINFORCE++", submit=True),
    Stage("eval", ("eval",), "rlhf.configs.eval:EvalConfig", "rlhf.stages.eval:run_eval",
          "compare checkpoints: win rates with intervals, reward vs KL, samples", submit=True),
    Stage("eval_human", ("eval-human",), "rlhf.configs.eval_human:HumanEvalConfig", None,
          "blind A/B comparison of two checkpoints by annotators in Argilla"),
    Stage("report", ("report",), "rlhf.configs.report:ReportConfig", "rlhf.stages.report:run_report",
          "an HTML report of an eval stage, with lineage back to the annotations", submit=True),
    Stage("pipeline", ("pipeline",), "rlhf.configs.pipeline:PipelineConfig", "rlhf.stages.pipeline:run_pipeline",
          "a whole RLHF round (or several), every stage wired to the next"),
    Stage("serve", ("serve",), "rlhf.configs.serve:ServeConfig", "rlhf.stages.serve:run_serve",
          "serve a checkpoint behind an OpenAI-compatible API on Ray Serve, with feedback and metrics"),
    Stage("feedback", ("feedback",), "rlhf.configs.serve:FeedbackConfig", None,
          "served feedback: export a window as the next round's prompts, or forget a user"),
    Stage("monitor", ("monitor",), "rlhf.configs.monitor:MonitorConfig", "rlhf.stages.monitor:run_monitor",
          "an HTML report of the served model over a time window: latency, feedback, flags, RM drift, alerts"),
    Stage("label", ("label",), "rlhf.labeling.config:LabelingConfig", None,
          "the Argilla labeling service: serve, users, workspaces"),
)
_BY_NAME = {entry.name: entry for entry in STAGES}


def _attribute(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def stage_names() -> list[str]:
    """Every stage name, in pipeline order."""
    return [entry.name for entry in STAGES]


def stage(name: str) -> Stage:
    """The table row of ``name``; an unknown name is a one-line error with the nearest valid one."""
    if name not in _BY_NAME:
        near = difflib.get_close_matches(str(name), list(_BY_NAME), n=1, cutoff=0.5)
        hint = f"did you mean '{near[0]}'?" if near else f"known stages: {', '.join(stage_names())}"
        raise ConfigError(f"unknown stage '{name}' ({hint})")
    return _BY_NAME[name]


def config_class(name: str) -> type[StrictModel]:
    """The config model of stage ``name``."""
    return stage(name).config_class()


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                expect_stage: str | None = None) -> StrictModel:
    """Load a YAML file (or the embedded defaults when ``path`` is None) plus overrides into its stage model.

    The file's ``stage:`` key picks the model; ``expect_stage`` makes the loader refuse a file written for
    another stage (naming the command that runs it).
    """
    data, source = read_config(path, overrides)
    name = data.get("stage", expect_stage)
    if name is None:
        raise ConfigError(f"{source}: missing top-level 'stage' key; add e.g. 'stage: sft' ({', '.join(stage_names())})")
    if expect_stage is not None and name != expect_stage:
        raise ConfigError(f"{source}: this file configures stage '{name}', not '{expect_stage}'; use "
                          f"'rlhf {' '.join(stage(str(name)).command)}'")
    data["stage"] = name
    return validate_config(config_class(str(name)), data, source)
