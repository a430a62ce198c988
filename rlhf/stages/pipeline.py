"""``rlhf pipeline``: a whole RLHF round, wiring the stages together (it re-implements none of them).

One round: prepare prompts -> SFT the base policy (unless ``sft_stage: false`` starts from an instruct
model as it is; the local Argilla service starts in the background meanwhile) -> generate candidates ->
make sure the service runs -> push a ranking dataset -> simulated annotators rank (or, with
``--wait-for-humans``, people do while the pipeline shows progress) -> pull a snapshot -> train the reward
model -> PPO and DPO -> evaluate against SFT (or that model) -> the report.

Rounds compound: round ``r + 1`` generates candidates for new prompts (the next ``generate.prompts.limit``
of the training prompts) from round ``r``'s best policy, collects new rankings, retrains the reward model on
every snapshot so far (``data.include``), and optimises the best policy again: DPO in round ``r + 1``
trains on pairs sampled from the policy it starts from and ranked in that round (iterative DPO); with
``dpo.online.enabled`` the round's reward model labels pairs the policy samples during training (online DPO). The best
policy is chosen by :func:`rlhf.eval.selection.best_policy`, whose rule (the trusted scorer, and a lower
interval end above 0.5) the pipeline prints and the report states; when no policy beats the baseline the
next round starts from the same policy. Every report after the first shows the earlier rounds beside it.

Each section of the config (``prepare``, ``sft``, ...; :mod:`rlhf.configs.pipeline`) is a partial config of
that stage, validated at load against the stage's own model. The pipeline sets the wiring keys itself (``run``, input and model
paths); setting one of them in a section is an error that names it. Every stage keeps its own
content-addressed folder, so a second run with nothing changed skips every stage, and deleting one
stage's folder re-runs that stage and those after it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from rlhf.configs.pipeline import PipelineConfig
from rlhf.core.artifacts import atomic_write_json
from rlhf.core.errors import UserError

__all__ = ["PipelineConfig", "run_pipeline"]


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


class _ServiceWarmup:
    """Starts the labeling service in a background thread while the SFT stage trains, so that labeling finds it
    running: a start takes about 15 s, and the first one on a machine about a minute more to build the
    server's venv. A failed start is left for labeling's own start to report."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._start, args=(cfg.labeling_config().service,),
                                       name="labeling-service-warmup", daemon=True)
        self.thread.start()

    def _start(self, service) -> None:
        from rlhf.labeling.service import start_service

        try:
            start_service(service)
        except Exception as err:  # noqa: BLE001 - labeling starts the service again and reports it there
            self.error = err

    def wait(self) -> None:
        self.thread.join()


def _labeling(cfg: PipelineConfig, round_no: int, candidates: Path, clock: _Clock,
              warmup: _ServiceWarmup | None = None) -> Path:
    """Push, annotate (bots or people) and pull; the service is started only when there is work for it."""
    from rlhf.labeling.loop.pull import find_previous
    from rlhf.labeling.service import start_service
    from rlhf.stages.label_pull import run_pull
    from rlhf.stages.label_push import open_push, run_push
    from rlhf.stages.label_simulate import run_simulate

    label_cfg = cfg.labeling_config()
    wiring = {"service": label_cfg.service.model_dump(), "argilla": label_cfg.argilla.model_dump()}
    push_cfg = cfg.stage_config("label_push", {**wiring, "candidates": str(candidates)}, round_no)
    push_run = open_push(push_cfg)
    if push_run.complete and not cfg.wait_for_humans:
        previous = find_previous(Path(cfg.run.root).resolve(), push_run.dir)
        if previous is not None:
            print(f"labeling: round {round_no} already collected and pulled ({previous}); skipping the service")
            return previous
    clock.step(round_no, "labeling service")
    if warmup is not None:
        warmup.wait()
        if warmup.error is not None:
            print(f"labeling: the background start failed ({warmup.error}); starting again")
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


def _warm_up_service(cfg: PipelineConfig) -> _ServiceWarmup | None:
    """The labeling service's start in the background, when the SFT stage is about to train (a pipeline
    re-run that finds SFT done may need no labeling at all)."""
    if not cfg.sft_stage:
        return None
    from rlhf.stages.sft import open_sft

    return None if open_sft(cfg.stage_config("sft", {}, 1)).complete else _ServiceWarmup(cfg)


def _starting_policy(cfg: PipelineConfig, clock: _Clock, warmup: _ServiceWarmup | None) -> tuple[str, Path]:
    """The baseline's name and folder: the SFT stage's output, or with ``sft_stage: false`` the model that
    ``sft.model.name_or_path`` names, as it is."""
    if cfg.sft_stage:
        from rlhf.stages.sft import run_sft

        clock.step(1, "SFT the base policy" + (" (the labeling service starts meanwhile)" if warmup else ""))
        return "sft", run_sft(cfg.stage_config("sft", {}, 1))
    from rlhf.models.loader import resolve_model_path

    base = cfg.stage_config("sft", {}, 1).model
    print(f"no SFT stage: every round starts from {base.name_or_path} and is evaluated against it")
    return "base", Path(resolve_model_path(base.name_or_path, base.tiny))


def _check_prompts_for_rounds(cfg: PipelineConfig, prepared: Path) -> None:
    """Refuse, before any training, a round count whose last round would find no new training prompt (each
    round answers the next ``generate.prompts.limit`` of the training prompts that the prepare stage in
    ``prepared`` kept, as its ``report.json`` counts them)."""
    if cfg.rounds == 1:
        return
    from rlhf.configs.generate import PromptSource

    limit = PromptSource(**cfg.generate.get("prompts", {})).limit
    available = json.loads((prepared / "report.json").read_text(encoding="utf-8"))["split"]["train"]
    if (cfg.rounds - 1) * limit >= available:
        raise UserError(f"rounds={cfg.rounds} needs more than {(cfg.rounds - 1) * limit} training prompts "
                        f"(generate.prompts.limit={limit} a round) but prepare kept {available}; set "
                        f"generate.prompts.limit={available // cfg.rounds} or more prepare.source prompts")


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every round; returns the last round's report folder."""
    from rlhf.eval.selection import best_policy
    from rlhf.stages.dpo import run_dpo
    from rlhf.stages.eval import run_eval
    from rlhf.stages.generate import run_generate
    from rlhf.stages.ppo import run_ppo
    from rlhf.stages.prepare import run_prepare
    from rlhf.stages.report import run_report
    from rlhf.stages.rm import run_reward_model

    clock = _Clock()
    clock.step(1, "prepare prompts")
    prepared = run_prepare(cfg.stage_config("prepare", {}, 1))
    _check_prompts_for_rounds(cfg, prepared)
    warmup = _warm_up_service(cfg)
    started_service = warmup is not None
    summary: list[dict[str, Any]] = []
    snapshots: list[Path] = []
    eval_dirs: list[Path] = []
    report_dir = None
    try:
        baseline, sft_dir = _starting_policy(cfg, clock, warmup)
        policy_name, policy = baseline, sft_dir
        for r in range(1, cfg.rounds + 1):
            clock.step(r, f"generate candidates from {policy_name}")
            gen_wiring = {"prompts.path": str(prepared / "prompts" / "train.jsonl"),
                          "policies": [{"name": policy_name, "path": str(policy)}]}
            limit = cfg.stage_config("generate", gen_wiring, r).prompts.limit
            gen = run_generate(cfg.stage_config("generate", {**gen_wiring, "prompts.offset": (r - 1) * limit}, r))
            snapshot = _labeling(cfg, r, gen, clock, warmup)
            started_service = True
            clock.step(r, "train the reward model" + (f" on the snapshots of rounds 1-{r}" if snapshots else ""))
            # The reward model starts from the SFT policy (or the base model) unless the rm section names another.
            rm_base = {} if cfg.sets("rm", "model.name_or_path") else {"model.name_or_path": str(sft_dir)}
            rm_dir = run_reward_model(cfg.stage_config("rm", {
                **rm_base, "data.path": str(snapshot), "data.include": [str(s) for s in snapshots],
                "data.format": "pairs"}, r))
            snapshots.append(snapshot)
            trained: dict[str, Path] = {}
            if "ppo" in cfg.algorithms:
                clock.step(r, "PPO")
                trained[f"ppo-r{r}"] = run_ppo(cfg.stage_config("ppo", {
                    "model.name_or_path": str(policy), "reward.model": str(rm_dir),
                    "data.path": str(prepared / "prompts" / "train.jsonl")}, r))
            if "dpo" in cfg.algorithms:
                clock.step(r, "DPO")
                online = {"online.reward_model": str(rm_dir)} if cfg.dpo_online() else {}
                trained[f"dpo-r{r}"] = run_dpo(cfg.stage_config("dpo", {
                    "model.name_or_path": str(policy), "data.path": str(snapshot), "data.format": "pairs",
                    **online}, r))
            # The policy this round started from competes too, so a round that makes things worse keeps it.
            contenders = {**trained, **({policy_name: policy} if policy_name != baseline else {})}
            clock.step(r, f"evaluate against {baseline}")
            eval_dir = run_eval(cfg.stage_config("eval", {
                "checkpoints": [{"name": n, "path": str(p)} for n, p in contenders.items()],
                "baseline": {"name": baseline, "path": str(sft_dir)},
                "prompts.path": str(prepared / "prompts" / "eval.jsonl"),
                "scoring.reward_models": [{"name": f"rm-r{r}", "path": str(rm_dir)}]}, r))
            clock.step(r, "report")
            report_dir = run_report(cfg.stage_config("report", {
                "eval_dir": str(eval_dir), "rounds": [str(d) for d in eval_dirs]}, r))
            eval_dirs.append(eval_dir)
            results = json.loads((eval_dir / "results.json").read_text())
            best_name, rule = best_policy(results, list(contenders))
            print(f"best policy of round {r}: {best_name or 'none beats the baseline; keeping ' + policy_name} ({rule})")
            summary.append({"round": r, "snapshot": str(snapshot), "reward_model": str(rm_dir),
                            "policies": {n: str(p) for n, p in trained.items()}, "eval": str(eval_dir),
                            "report": str(report_dir / "report.html"), "best": best_name or policy_name,
                            "best_rule": rule})
            if best_name is not None:
                policy_name, policy = best_name, contenders[best_name]
    finally:
        try:
            if warmup is not None and warmup.thread.is_alive():
                print("labeling: waiting for the service's background start to finish, to stop it", flush=True)
                warmup.wait()
        finally:
            if started_service and not cfg.keep_service:
                from rlhf.labeling.service import stop_service

                stop_service(cfg.labeling_config().service)
    elapsed = clock.total()
    atomic_write_json(Path(cfg.run.root) / "pipeline-summary.json", {"rounds": summary, "seconds": elapsed})
    _print_summary(summary, elapsed, baseline)
    return report_dir  # type: ignore[return-value]


def _print_summary(summary: list[dict[str, Any]], elapsed: float, baseline: str) -> None:
    print(f"\n=== pipeline finished in {elapsed:.0f} s ({elapsed / 60:.1f} min)")
    for entry in summary:
        gold = _gold_comparisons(Path(entry["eval"]), "gold")
        print(f"round {entry['round']}: report {entry['report']}")
        for name in entry["policies"]:
            if name in gold:
                c = gold[name]
                print(f"  {name}: gold-rubric win rate vs {baseline} {c['win_rate']:.1%} "
                      f"(95% CI {c['ci_low']:.1%} to {c['ci_high']:.1%})")
        print(f"  best policy: {entry['best']} ({entry['best_rule']})")
