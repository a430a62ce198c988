"""``rlhf eval``: compare checkpoints with a baseline on a fixed prompt set.

Steps, in order:

1. **Prompts**: a JSONL file (``prompt``, optional ``id`` and ``category``) or held-out demo-world prompts
   (a seed range apart from the training prompts); a category per prompt from the file or from
   ``prompts.category`` (``module:function`` of the prompt text; the demo world's ``intent_of``).
2. **Generate**: every policy (the baseline first, then each checkpoint) samples
   ``generation.samples_per_prompt`` replies per prompt through the shared rollout engine with the same
   seed (common random numbers: a checkpoint identical to the baseline gives identical replies). With
   ``kl.enabled`` each reply's log-probability is recomputed by a forward pass under the policy and under
   the reference (the baseline unless ``reference`` is set), for the sequence-level Monte Carlo KL
   (:mod:`rlhf.eval.divergence`).
3. **Score**: the gold rubric (``scoring.rubric``), each reward model (normalised with the mean/std it
   saved in ``reward_stats.json``; the raw score is kept too), and the optional pairwise judge (an LM or a
   ``module:function``), which compares each checkpoint's reply with the baseline's in both slot orders.
4. **Analyse** (:mod:`rlhf.eval.analysis`, through the ``evaluate`` modules in ``rlhf/eval/metrics/``): win rates
   with ties as half, paired bootstrap intervals, exact binomial checks, length-controlled win rates,
   per-category tables, reward-length correlation, KL; and best-of-n on separate samples.

Outputs (``runs/eval/<name>-<fingerprint>/``): ``results.json`` (every statistic, and each reward model's held-out summary from its
stage folder), ``samples.parquet``
(every sample and score), ``best_of_n.parquet`` (when enabled), ``metrics.json``, ``manifest.json``
(whose inputs link each checkpoint's stage folder, so ``rlhf report`` can walk each one's lineage).
``rlhf eval-human push|pull`` (blind A/B evaluation by people) is described in :mod:`rlhf.stages.eval_human`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from rlhf.configs.eval import EvalConfig
from rlhf.core.artifacts import StageRun, atomic_write_json, atomic_write_text
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage

__all__ = ["EvalConfig", "run_eval"]


def _demo_prompt_file(root: str, count: int, seed: int) -> Path:
    from rlhf.world.demo import generate_prompts

    lines = "".join(json.dumps({"id": p.id, "prompt": p.text, "category": p.intent}) + "\n"
                    for p in generate_prompts(count, seed=seed))
    path = Path(root) / "corpora" / f"demo-eval-{hashlib.sha256(lines.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        atomic_write_text(path, lines)
    return path


def read_prompt_set(path: Path, category_fn: str | None) -> list[dict[str, Any]]:
    """Rows {index, id, prompt, category} from a prompt JSONL file."""
    from rlhf.utils.callables import load_callable

    categorise = load_callable(category_fn) if category_fn else None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: not valid JSON; each line must be an object with 'prompt'") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise UserError(f"{path}:{number}: 'prompt' must be a non-empty string")
        category = row.get("category") or (categorise(row["prompt"]) if categorise else "all")
        rows.append({"index": len(rows), "id": str(row.get("id", len(rows))), "prompt": row["prompt"],
                     "category": str(category)})
    if len(rows) < 2:
        raise UserError(f"{path} holds {len(rows)} prompt(s); an evaluation needs at least 2")
    return rows


def run_eval(cfg: EvalConfig) -> Path:
    """Run (or skip, when already complete) the evaluation; returns the stage folder."""
    from rlhf.models.loader import resolve_model_path

    if cfg.baseline is None or not cfg.checkpoints:
        raise UserError("eval needs a baseline and at least one checkpoint: pass baseline=<folder> "
                        "checkpoints=[<folder>,...] or set them in the config file")
    prompt_file = Path(cfg.prompts.path) if cfg.prompts.path else _demo_prompt_file(
        cfg.run.root, cfg.prompts.demo_count, cfg.prompts.demo_seed)
    if not prompt_file.is_file():
        raise UserError(f"prompts.path {prompt_file} does not exist; point it at a JSONL file or omit it")
    model_paths = {p.name: resolve_model_path(p.path) for p in [cfg.baseline, *cfg.checkpoints]}
    reference = resolve_model_path(cfg.reference) if cfg.reference else model_paths[cfg.baseline.name]
    rm_paths = {rm.name: resolve_model_path(rm.path) for rm in cfg.scoring.reward_models}
    inputs: dict[str, str | Path] = {"prompts": prompt_file, "reference": reference}
    inputs.update({f"policy/{name}": path for name, path in model_paths.items()})
    inputs.update({f"reward/{name}": path for name, path in rm_paths.items()})
    if cfg.scoring.judge.model:
        inputs["judge"] = resolve_model_path(cfg.scoring.judge.model)
    run = open_stage(cfg, inputs)
    if run.complete:
        print(f"eval: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _evaluate(cfg, run, prompt_file, model_paths, reference, rm_paths)


def _evaluate(cfg: EvalConfig, run: StageRun, prompt_file: Path, model_paths: dict[str, str], reference: str,
              rm_paths: dict[str, str]) -> Path:
    import pandas as pd

    from rlhf.eval.analysis import AnalysisSettings, MetricSuite, analyse
    from rlhf.eval.sampling import best_of_n_results, judge_against_baseline, sample_policies, score_samples
    from rlhf.utils.seed import seed_everything

    seed_everything(cfg.run.seed)
    suite = MetricSuite(cfg.metrics_dir)
    prompts = read_prompt_set(prompt_file, cfg.prompts.category)
    baseline = cfg.baseline.name  # type: ignore[union-attr]
    checkpoints = [p.name for p in cfg.checkpoints]
    bon_policies = (cfg.best_of_n.policies or [baseline]) if cfg.best_of_n.n > 0 else []
    gen = cfg.generation
    rows, bon_rows = sample_policies(
        prompts, model_paths, reference if cfg.kl.enabled else None, dtype=cfg.model.dtype, device=cfg.model.device,
        params=gen.params(n=gen.samples_per_prompt), batch_size=gen.batch_size, seed=cfg.run.seed,
        best_of_n=cfg.best_of_n.n, best_of_n_prompts=cfg.best_of_n.prompts, best_of_n_policies=bon_policies,
        scoring_batch_size=cfg.scoring.batch_size,
    )
    frame = pd.DataFrame(rows)
    bon_frame = pd.DataFrame(bon_rows)
    reward_norm = score_samples([frame, bon_frame], cfg.scoring.rubric, rm_paths, dtype=cfg.model.dtype,
                                device=cfg.model.device, batch_size=cfg.scoring.batch_size)
    frame["judge_prob"] = math.nan
    frame["judge_consistent"] = math.nan
    if cfg.scoring.judge.enabled:
        judge_against_baseline(frame, baseline, checkpoints, judge_model=cfg.scoring.judge.model,
                               judge_callable=cfg.scoring.judge.callable, dtype=cfg.model.dtype,
                               device=cfg.model.device)
    settings = AnalysisSettings(tie_tolerance=cfg.stats.tie_tolerance, n_boot=cfg.stats.n_bootstrap,
                                lc_boot=cfg.stats.lc_bootstrap, confidence=cfg.stats.confidence, seed=cfg.run.seed,
                                length_unit=cfg.stats.length_unit)
    print("eval: computing statistics")
    results = analyse(frame, checkpoints, baseline, cfg.scorer_names(), cfg.primary_scorer(), suite, settings,
                      with_kl=cfg.kl.enabled)
    proxy = cfg.best_of_n.proxy or (cfg.scoring.reward_models[0].name if cfg.scoring.reward_models else None)
    results["best_of_n"] = (best_of_n_results(bon_frame, proxy, cfg.best_of_n.n, suite)
                            if cfg.best_of_n.n > 0 and proxy else {})
    results["models"] = {p.name: {"spec": p.path, "model_path": model_paths[p.name]}
                         for p in [cfg.baseline, *cfg.checkpoints]}  # type: ignore[union-attr]
    results["reference"] = reference if cfg.kl.enabled else None
    results["reward_normalisation"] = reward_norm
    results["reward_models"] = {name: _reward_model_card(path) for name, path in rm_paths.items()}
    results["prompt_set"] = {"path": str(prompt_file), "prompts": len(prompts),
                             "categories": sorted({p["category"] for p in prompts})}
    results["generation"] = gen.model_dump()

    frame.to_parquet(run.path("samples.parquet"), index=False)
    outputs = ["results.json", "samples.parquet", "metrics.json"]
    if not bon_frame.empty:
        bon_frame.to_parquet(run.path("best_of_n.parquet"), index=False)
        outputs.append("best_of_n.parquet")
    metrics = flat_metrics(results)
    atomic_write_json(run.path("results.json"), results)
    atomic_write_json(run.path("metrics.json"), metrics)
    run.finish(outputs, metrics=metrics)
    _print_summary(results)
    print(f"eval: done -> {run.dir}")
    return run.dir


def _reward_model_card(model_path: str) -> dict[str, Any]:
    """A reward model's path and the held-out summary its ``rlhf train rm`` stage wrote (accuracy, ECE before
    and after temperature scaling, ...), when the model sits in such a stage folder."""
    card: dict[str, Any] = {"model_path": model_path}
    for folder in (Path(model_path), Path(model_path).parent):
        if (folder / "eval.json").is_file():
            report = json.loads((folder / "eval.json").read_text())
            card.update(stage_dir=str(folder), pairs=report.get("pairs"), **report.get("summary", {}))
            break
    return card


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Namespaced scalars: ``eval/<policy>/win_rate/<scorer>``, ``eval/<policy>/kl``, ``eval/<policy>/<scorer>``."""
    out: dict[str, float] = {}
    for row in results["comparisons"]:
        if row["baseline"] == results["baseline"]:
            key = f"eval/{row['policy']}/win_rate/{row['scorer']}"
            out[key] = row["win_rate"]
            out[key + "/ci_low"], out[key + "/ci_high"] = row["ci_low"], row["ci_high"]
            out[f"eval/{row['policy']}/lc_win_rate/{row['scorer']}"] = row["lc_win_rate"]
    for name, summary in results["summary"].items():
        if summary.get("kl"):
            out[f"eval/{name}/kl"] = summary["kl"]["kl"]
        for key, value in summary.items():
            if key.startswith("score/"):
                out[f"eval/{name}/{key.removeprefix('score/')}"] = value["mean"]
        out[f"eval/{name}/tokens"] = summary["tokens"]["mean"]
    return out


def _print_summary(results: dict[str, Any]) -> None:
    primary = results["primary"]
    for row in results["comparisons"]:
        if row["scorer"] == primary:
            print(f"eval: {row['policy']} vs {row['baseline']} ({primary}): win rate {row['win_rate']:.1%} "
                  f"[{row['ci_low']:.1%}, {row['ci_high']:.1%}], LC {row['lc_win_rate']:.1%}")
