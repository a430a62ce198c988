"""``rlhf pipeline``: a whole RLHF round, wiring the stages together (it re-implements none of them).

One round: prepare prompts -> SFT the base policy -> generate candidates -> start the local Argilla
service -> push a ranking dataset -> simulated annotators rank (or, with ``--wait-for-humans``, people do
while the pipeline shows progress) -> pull a snapshot -> train the reward model -> PPO and DPO -> evaluate
against SFT -> the report. Round ``r + 1`` starts from round ``r``'s best policy (by the eval's primary
win rate): it generates new candidates from it, collects new rankings, and optimises it again.

Each section of the config (``prepare``, ``sft``, ...) is a partial config of that stage, validated at
load against the stage's own model. The pipeline sets the wiring keys itself (``run``, input and model
paths); setting one of them in a section is an error that names it. Every stage keeps its own
content-addressed folder, so a second run with nothing changed skips every stage, and deleting one
stage's folder re-runs that stage and those after it.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rlhf.core.artifacts import atomic_write_json
from rlhf.core.config import RunConfig, StrictModel, validate_config

__all__ = ["PipelineConfig", "run_pipeline"]

# Section -> (stage config name, dotted keys the pipeline sets itself).
SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prepare": ("prepare", ("run",)),
    "sft": ("sft", ("run",)),
    "generate": ("generate", ("run", "prompts.path", "policies")),
    "label_push": ("label_push", ("run", "candidates", "service", "argilla")),
    "label_simulate": ("label_simulate", ("run", "push", "service", "argilla")),
    "label_pull": ("label_pull", ("run", "push", "service", "argilla")),
    "rm": ("rm", ("run", "data.path", "data.format")),
    "ppo": ("ppo", ("run", "model.name_or_path", "reward.model", "reward.function", "data.path")),
    "dpo": ("dpo", ("run", "model.name_or_path", "data.path", "data.format")),
    "eval": ("eval", ("run", "checkpoints", "baseline", "reference", "prompts.path", "scoring.reward_models")),
    "report": ("report", ("run", "eval_dir")),
}


def _has(data: dict, dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


class PipelineConfig(StrictModel):
    """A whole RLHF round (or several) on one config."""

    stage: Literal["pipeline"] = "pipeline"
    run: RunConfig = Field(default_factory=lambda: RunConfig(root="runs/quickstart"))
    rounds: int = Field(1, ge=1, le=10, description="collection rounds; each starts from the previous best policy")
    wait_for_humans: bool = Field(False, description="wait for people to rank in the UI instead of simulated bots")
    human_poll_s: float = Field(10.0, gt=0, description="seconds between progress checks while waiting for humans")
    keep_service: bool = Field(False, description="leave the Argilla service running when the pipeline ends")
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
            _validated(stage, self._placeholder(section, data), f"pipeline section '{section}'")
        _validated("label", self.label, "pipeline section 'label'")
        return self

    def _placeholder(self, section: str, data: dict) -> dict:
        """The section with its wiring keys filled by stand-ins, to validate it before anything runs."""
        out = copy.deepcopy(data)
        fills = {"generate": {"policies": [{"name": "p", "path": "tiny"}]},
                 "ppo": {"reward.model": "reward-model"}}
        for key, value in fills.get(section, {}).items():
            _set(out, key, value)
        return out

    def stage_config(self, section: str, wiring: dict[str, Any], round_no: int):
        """The full config of ``section``'s stage for ``round_no`` with the pipeline's wiring applied."""
        stage, _ = SECTIONS[section]
        data = copy.deepcopy(getattr(self, section))
        data["run"] = {"root": self.run.root, "name": f"r{round_no}", "seed": self.run.seed}
        for key, value in wiring.items():
            _set(data, key, value)
        return _validated(stage, data, f"pipeline section '{section}'")


def _validated(stage: str, data: dict, source: str):
    from rlhf.stages import config_class

    return validate_config(config_class(stage), {**data, "stage": stage}, source=source)


class _Clock:
    """Prints where the pipeline is and how long each step took."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def step(self, round_no: int, name: str) -> None:
        print(f"\n=== round {round_no}: {name}  (t={time.monotonic() - self.start:.0f}s)", flush=True)

    def total(self) -> float:
        return time.monotonic() - self.start


def _gold_comparisons(eval_dir: Path, scorer: str | None = None) -> dict[str, dict[str, Any]]:
    """Each checkpoint's comparison with the baseline under ``scorer`` (default: the eval's primary)."""
    results = json.loads((eval_dir / "results.json").read_text())
    scorer = scorer or results["primary"]
    return {c["policy"]: c for c in results["comparisons"] if c["scorer"] == scorer and c["baseline"] == results["baseline"]}


def _best_policy(eval_dir: Path, candidates: dict[str, Path], fallback: Path) -> tuple[str, Path]:
    """The checkpoint with the highest primary win rate against the baseline, if any beats it."""
    comparisons = _gold_comparisons(eval_dir)
    best, best_rate = None, 0.5
    for name in candidates:
        rate = comparisons[name]["win_rate"]
        if rate > best_rate:
            best, best_rate = name, rate
    return (best, candidates[best]) if best else ("baseline", fallback)


def _labeling(cfg: PipelineConfig, round_no: int, candidates: Path, clock: _Clock) -> Path:
    """Push, annotate (bots or people) and pull; the service is started only when there is work for it."""
    from rlhf.labeling.config import LabelingConfig
    from rlhf.labeling.loop.pull import find_previous
    from rlhf.labeling.service import start_service
    from rlhf.stages.label_pull import run_pull
    from rlhf.stages.label_push import open_push, run_push
    from rlhf.stages.label_simulate import run_simulate

    label_cfg: LabelingConfig = _validated("label", cfg.label, "pipeline section 'label'")
    wiring = {"service": label_cfg.service.model_dump(), "argilla": label_cfg.argilla.model_dump()}
    push_cfg = cfg.stage_config("label_push", {**wiring, "candidates": str(candidates)}, round_no)
    push_run = open_push(push_cfg)
    if push_run.complete and not cfg.wait_for_humans:
        previous = find_previous(Path(cfg.run.root).resolve(), push_run.dir)
        if previous is not None:
            print(f"labeling: round {round_no} already collected and pulled ({previous}); skipping the service")
            return previous
    clock.step(round_no, "labeling service")
    status = start_service(label_cfg.service)
    print(f"labeling: Argilla at {status.url}")
    clock.step(round_no, "push candidates to Argilla")
    push_dir = run_push(push_cfg)
    if cfg.wait_for_humans:
        _wait_for_humans(cfg, label_cfg, push_dir, status.url)
    else:
        clock.step(round_no, "simulated annotators rank")
        run_simulate(cfg.stage_config("label_simulate", {**wiring, "push": str(push_dir)}, round_no))
    clock.step(round_no, "pull the snapshot")
    return run_pull(cfg.stage_config("label_pull", {**wiring, "push": str(push_dir)}, round_no))


def _wait_for_humans(cfg: PipelineConfig, label_cfg, push_dir: Path, url: str | None) -> None:
    """Print where to rank and show progress until every record has its annotations."""
    from rlhf.labeling.loop.common import connect, load_pseudonym_key, read_push
    from rlhf.labeling.loop.status import round_status

    print(f"labeling: rank in the UI at {url}; the owner's credentials are in the service's secrets file "
          f"under {label_cfg.service.home_path()} (add annotators with 'rlhf label users add NAME'). "
          "Ctrl-C stops waiting; re-running the pipeline picks up where it stopped.", flush=True)
    push = read_push(push_dir)
    key = load_pseudonym_key(label_cfg.service)
    with connect(label_cfg.argilla, label_cfg.service) as http:
        while True:
            status = round_status(http, push, key)
            print(status.describe(), flush=True)
            if status.records and status.completed >= status.records:
                return
            time.sleep(cfg.human_poll_s)


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every round; returns the last round's report folder."""
    from rlhf.stages.dpo import run_dpo
    from rlhf.stages.eval import run_eval
    from rlhf.stages.generate import run_generate
    from rlhf.stages.ppo import run_ppo
    from rlhf.stages.prepare import run_prepare
    from rlhf.stages.report import run_report
    from rlhf.stages.rm import run_reward_model
    from rlhf.stages.sft import run_sft

    clock = _Clock()
    started_service = False
    clock.step(1, "prepare prompts")
    prepared = run_prepare(cfg.stage_config("prepare", {}, 1))
    clock.step(1, "SFT the base policy")
    sft_dir = run_sft(cfg.stage_config("sft", {}, 1))
    policy_name, policy = "sft", sft_dir
    summary: list[dict[str, Any]] = []
    report_dir = None
    try:
        for r in range(1, cfg.rounds + 1):
            clock.step(r, f"generate candidates from {policy_name}")
            gen = run_generate(cfg.stage_config("generate", {
                "prompts.path": str(prepared / "prompts" / "train.jsonl"),
                "policies": [{"name": policy_name, "path": str(policy)}]}, r))
            snapshot = _labeling(cfg, r, gen, clock)
            started_service = True
            clock.step(r, "train the reward model")
            rm_dir = run_reward_model(cfg.stage_config("rm", {"data.path": str(snapshot), "data.format": "pairs"}, r))
            trained: dict[str, Path] = {}
            if "ppo" in cfg.algorithms:
                clock.step(r, "PPO")
                trained[f"ppo-r{r}"] = run_ppo(cfg.stage_config("ppo", {
                    "model.name_or_path": str(policy), "reward.model": str(rm_dir),
                    "data.path": str(prepared / "prompts" / "train.jsonl")}, r))
            if "dpo" in cfg.algorithms:
                clock.step(r, "DPO")
                trained[f"dpo-r{r}"] = run_dpo(cfg.stage_config("dpo", {
                    "model.name_or_path": str(policy), "data.path": str(snapshot), "data.format": "pairs"}, r))
            clock.step(r, "evaluate against SFT")
            eval_dir = run_eval(cfg.stage_config("eval", {
                "checkpoints": [{"name": n, "path": str(p)} for n, p in trained.items()],
                "baseline": {"name": "sft", "path": str(sft_dir)},
                "prompts.path": str(prepared / "prompts" / "eval.jsonl"),
                "scoring.reward_models": [{"name": f"rm-r{r}", "path": str(rm_dir)}]}, r))
            clock.step(r, "report")
            report_dir = run_report(cfg.stage_config("report", {"eval_dir": str(eval_dir)}, r))
            best_name, best = _best_policy(eval_dir, trained, policy)
            summary.append({"round": r, "snapshot": str(snapshot), "reward_model": str(rm_dir),
                            "policies": {n: str(p) for n, p in trained.items()}, "eval": str(eval_dir),
                            "report": str(report_dir / "report.html"), "best": best_name})
            if best_name != "baseline":
                policy_name, policy = best_name, best
    finally:
        if started_service and not cfg.keep_service:
            from rlhf.labeling.config import LabelingConfig
            from rlhf.labeling.service import stop_service

            label_cfg: LabelingConfig = _validated("label", cfg.label, "pipeline section 'label'")
            stop_service(label_cfg.service)
    elapsed = clock.total()
    atomic_write_json(Path(cfg.run.root) / "pipeline-summary.json", {"rounds": summary, "seconds": elapsed})
    _print_summary(summary, elapsed)
    return report_dir  # type: ignore[return-value]


def _print_summary(summary: list[dict[str, Any]], elapsed: float) -> None:
    print(f"\n=== pipeline finished in {elapsed:.0f} s ({elapsed / 60:.1f} min)")
    for entry in summary:
        gold = _gold_comparisons(Path(entry["eval"]), "gold")
        print(f"round {entry['round']}: report {entry['report']}")
        for name in entry["policies"]:
            if name in gold:
                c = gold[name]
                print(f"  {name}: gold-rubric win rate vs SFT {c['win_rate']:.1%} "
                      f"(95% CI {c['ci_low']:.1%} to {c['ci_high']:.1%})")
        print(f"  best policy: {entry['best']}")
