"""``rlhf train rm``: a Bradley-Terry reward model trained with TRL's RewardTrainer on Ray Train workers.

Data: a pairs snapshot (``data.path``: a folder holding ``pairs.jsonl``, see :mod:`rlhf.data.pairs`), an
HH-RLHF file (``data.format: hh``), more snapshots trained on together with the first (``data.include``:
the pipeline passes earlier rounds' snapshots), or, with no path, demo-world pairs from simulated honest annotators
(written once as a content-named snapshot under ``<root>/pairs/`` so it is hashed like any input). Pairs are
split by prompt (a pair's own ``split`` wins) into train and held-out sets.

Loss (TRL ``RewardTrainer``): ``-log sigmoid(r_c - r_r - m)`` per pair, where the margin ``m`` is 0
(``loss.margin: none``), ``scale * (2 * agreement - 1)`` (``agreement``: unanimous pairs ask for a wider
gap) or ``scale * margin`` (``strength``: the snapshot's preference strength); plus optionally
``center_rewards_coefficient * mean((r_c + r_r)^2)`` to keep rewards near zero (Eisenstein et al. 2023).
With ``loss.batching: prompts`` a batch holds prompts instead of pairs: each distinct reply is scored once and
the same loss is taken over every pair among them (:mod:`rlhf.trainers.grouped_reward`), which makes a
ranking of K candidates cost K forward passes instead of K(K-1).
The model is a sequence classifier with one output on top of ``model.name_or_path`` (usually the SFT
policy); LoRA and DeepSpeed ZeRO come from the config. Training runs on ``resources.num_workers`` Ray Train
workers (:mod:`rlhf.trainers.ray_train`) and resumes from the newest complete checkpoint after a crash. The
config model is :class:`rlhf.configs.rm.RMConfig`.

Outputs (in ``runs/rm/<name>-<fingerprint>/``): ``model/`` (weights, tokenizer and ``reward_stats.json``:
mean and std of rewards on training responses, which PPO uses to normalise rewards), ``eval.json`` (held-out
accuracy overall and by agreement bucket, ECE and calibration bins before and after temperature scaling
(the temperature, fitted on held-out pairs, is saved in ``reward_stats.json``; the calibrated ECE is
cross-fitted over prompts), reward-length correlation, length-only baseline, and on demo-world data the best-of-n curve of proxy reward against the gold rubric),
``metrics.json``, ``metrics.jsonl`` + ``tensorboard/`` (``train/*``), ``manifest.json``.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlhf.configs.rm import PairsDataConfig, RMConfig
from rlhf.core.artifacts import StageRun, atomic_write_json, hash_path
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.data.pairs import (
    PreferencePair,
    best_vs_worst,
    demo_pairs,
    pairs_from_hh,
    read_pairs,
    split_pairs,
    write_pairs,
)
from rlhf.models.reward import REWARD_STATS_FILE, chat_ids, reward_scores
from rlhf.trainers.hf import deepspeed_dict, last_complete_checkpoint, publish_trained
from rlhf.trainers.ray_train import per_device_batch_size, run_on_ray, trainer_arguments, trl_worker

__all__ = ["RMConfig", "group_rows", "prepare_pairs", "run_reward_model"]


def prepare_pairs(data: PairsDataConfig, root: str, seed: int
                  ) -> tuple[dict[str, str | Path], list[PreferencePair], dict[str, Any]]:
    """(stage inputs for lineage, pairs, source summary) for snapshots, an HH file or demo-world pairs.

    ``data.include`` adds further snapshots (earlier rounds') to ``data.path``'s pairs; each is a stage input,
    so the lineage of the model reaches every snapshot it was trained on.
    """
    if data.path is None:
        pairs = demo_pairs(data.demo_prompts, data.demo_candidates, seed=seed, annotators=data.demo_annotators,
                           noise=data.demo_noise)
        tmp = Path(root) / "pairs" / f".demo-{os.getpid()}"
        write_pairs(tmp, pairs)
        folder = Path(root) / "pairs" / f"demo-{hash_path(tmp / 'pairs.jsonl')[:16]}"
        if (folder / "pairs.jsonl").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        return {"pairs": folder}, pairs, {"source": "demo", "pairs": len(pairs)}
    sources = [Path(data.path), *(Path(p) for p in data.include)]
    for source in sources:
        if not source.exists():
            key = "data.path" if source == sources[0] else "data.include"
            raise UserError(f"{key} {source} does not exist; point it at a pairs snapshot or an HH-RLHF file")
    if data.format == "hh":
        pairs, summary = pairs_from_hh(sources[0])
        return {"pairs": sources[0]}, pairs, {"source": "hh-rlhf", **summary}
    pairs = []
    per_source = []
    for source in sources:
        read = read_pairs(source)
        pairs.extend(read)
        per_source.append(len(read))
    inputs: dict[str, str | Path] = {"pairs": sources[0], **{f"pairs:{i}": s for i, s in enumerate(sources[1:], 1)}}
    summary: dict[str, Any] = {"source": "pairs", "pairs": len(pairs)}
    if data.include:
        summary["pairs_per_snapshot"] = per_source
    return inputs, pairs, summary


def _margin(pair: PreferencePair, mode: str, scale: float) -> float:
    if mode == "agreement":
        return scale * (2.0 * pair.agreement - 1.0)
    if mode == "strength":
        return scale * pair.margin
    return 0.0


def group_rows(prompt_ids: Iterable[str], chosen: Iterable[list[int]], rejected: Iterable[list[int]],
               margins: Iterable[float] | None = None) -> list[dict[str, Any]]:
    """One row per prompt from aligned pair columns: each pair's prompt id and its chosen and rejected token ids
    (prompt and reply). A reply shared by several pairs of its prompt appears once in its row."""
    rows: dict[str, dict[str, Any]] = {}
    slots: dict[str, dict[tuple[int, ...], int]] = {}
    margin_list = None if margins is None else list(margins)
    for n, (prompt, c_ids, r_ids) in enumerate(zip(prompt_ids, chosen, rejected, strict=True)):
        row = rows.setdefault(prompt, {"replies_ids": [], "chosen_index": [], "rejected_index": []})
        index = slots.setdefault(prompt, {})
        for ids in (c_ids, r_ids):
            if tuple(ids) not in index:
                index[tuple(ids)] = len(row["replies_ids"])
                row["replies_ids"].append(list(ids))
        row["chosen_index"].append(index[tuple(c_ids)])
        row["rejected_index"].append(index[tuple(r_ids)])
        if margin_list is not None:
            row.setdefault("margin", []).append(float(margin_list[n]))
    return list(rows.values())


def _save_dataset(pairs: list[PreferencePair], tokenizer, max_length: int, folder: Path, margin_mode: str,
                  scale: float, by_prompt: bool = False) -> tuple[list[PreferencePair], int]:
    """Tokenise pairs (exactly as :func:`reward_scores` does) into a dataset on disk; (kept pairs, dropped).

    ``by_prompt`` writes one row per prompt (:func:`group_rows`), each distinct reply tokenised once."""
    from datasets import Dataset

    tokens: dict[tuple, list[int]] = {}

    def ids(pair: PreferencePair, attr: str) -> list[int]:
        key = (tuple(tuple(m.items()) for m in pair.conversation()), getattr(pair, attr))
        if key not in tokens:
            tokens[key] = chat_ids(tokenizer, pair.conversation(), getattr(pair, attr))
        return tokens[key]

    kept = [p for p in pairs if max(len(ids(p, "chosen")), len(ids(p, "rejected"))) <= max_length]
    if not kept:
        raise UserError(f"every pair is longer than train.max_length={max_length} tokens; raise train.max_length")
    margins = [_margin(p, margin_mode, scale) for p in kept] if margin_mode != "none" else None
    if by_prompt:
        rows = group_rows([p.prompt_id for p in kept], [ids(p, "chosen") for p in kept],
                          [ids(p, "rejected") for p in kept], margins)
    else:
        rows = [{"chosen_ids": ids(p, "chosen"), "rejected_ids": ids(p, "rejected")} for p in kept]
        for row, margin in zip(rows, margins or []):
            row["margin"] = margin
    shutil.rmtree(folder, ignore_errors=True)
    Dataset.from_list(rows).save_to_disk(str(folder))
    return kept, len(pairs) - len(kept)


def run_reward_model(cfg: RMConfig) -> Path:
    """Run (or skip, when already complete) the reward-model stage; returns the stage folder."""
    from rlhf.models.loader import resolve_model_path

    inputs, pairs, summary = prepare_pairs(cfg.data, cfg.run.root, cfg.run.seed)
    base = resolve_model_path(cfg.model.name_or_path, cfg.model.tiny)
    run = open_stage(cfg, inputs={**inputs, "base_model": base})
    if run.complete:
        print(f"rm: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _train(cfg, run, pairs, summary, base)


def _train(cfg: RMConfig, run: StageRun, pairs: list[PreferencePair], summary: dict[str, Any], base: str) -> Path:
    from rlhf.models.loader import load_tokenizer

    train_pairs, eval_pairs = split_pairs(pairs, cfg.data.eval_fraction, cfg.run.seed)
    if cfg.data.train_pairs == "best_vs_worst":
        train_pairs = best_vs_worst(train_pairs)
    if cfg.data.max_train_pairs is not None and len(train_pairs) > cfg.data.max_train_pairs:
        train_pairs = random.Random(cfg.run.seed).sample(train_pairs, cfg.data.max_train_pairs)
    if not train_pairs or not eval_pairs:
        raise UserError(f"split gave {len(train_pairs)} training and {len(eval_pairs)} held-out pairs; "
                        "both must be non-empty (adjust data.eval_fraction or the snapshot's split fields)")
    data_dir = run.path("data")
    tokenizer = load_tokenizer(base)
    by_prompt = cfg.loss.batching == "prompts"
    train_pairs, dropped = _save_dataset(train_pairs, tokenizer, cfg.train.max_length, data_dir / "train",
                                         cfg.loss.margin, cfg.loss.margin_scale, by_prompt)
    if cfg.train.eval_steps:
        _save_dataset(eval_pairs, tokenizer, cfg.train.max_length, data_dir / "eval", cfg.loss.margin,
                      cfg.loss.margin_scale, by_prompt)
    ckpt_dir = run.path("checkpoints")
    resume = last_complete_checkpoint(ckpt_dir)
    if resume is not None:
        print(f"rm: resuming from {resume}")
    staging = run.path(".model.partial")
    shutil.rmtree(staging, ignore_errors=True)
    args = trainer_arguments(
        output_dir=ckpt_dir, **cfg.train.optimiser_arguments(), eval_steps=cfg.train.eval_steps,
        per_device_batch=per_device_batch_size(cfg.train.batch_size, cfg.resources.num_workers, cfg.train.grad_accum),
        seed=cfg.run.seed, use_gpu=cfg.resources.use_gpu, bf16=cfg.model.dtype == "bfloat16",
        deepspeed=deepspeed_dict(cfg.deepspeed))
    # Pairs are tokenised and length-filtered above, so the trainer neither re-tokenises nor filters.
    args.update(max_length=None, center_rewards_coefficient=cfg.loss.center_rewards_coefficient)
    payload = {
        "base": base, "dtype": cfg.model.dtype, "seed": cfg.run.seed, "args": args,
        "lora": cfg.model.lora.model_dump() if cfg.model.lora.enabled else None,
        "train_data": str(data_dir / "train"), "eval_data": str(data_dir / "eval") if cfg.train.eval_steps else None,
        "resume": str(resume) if resume else None, "model_dir": str(staging),
        "adapter_dir": str(run.path(".adapter.partial")),
        "metrics": str(run.path("metrics.jsonl")), "tensorboard": str(run.path("tensorboard")),
    }
    trainer = "grouped_reward" if by_prompt else "reward"
    final = run_on_ray(trl_worker, {**payload, "trainer": trainer}, cfg.resources, storage=run.path("ray"), name="rm")
    target = run.path("model")
    model_outputs = publish_trained(staging, run.dir, cfg.model.lora.saved)

    report = _evaluate(cfg, target, train_pairs, eval_pairs)
    atomic_write_json(target / REWARD_STATS_FILE, report.pop("reward_stats"))
    atomic_write_json(run.path("eval.json"), report)
    metrics = {"train/global_step": final.get("global_step"), "train/final_loss": final.get("final_loss"),
               "train/resumed_from_step": final.get("resumed_from_step"),
               "data/train_pairs": len(train_pairs), "data/eval_pairs": len(eval_pairs),
               "data/train_prompts": len({p.prompt_id for p in train_pairs}),
               "data/train_pairs_too_long": dropped,
               **{f"eval/{k}": v for k, v in report["summary"].items()}}
    atomic_write_json(run.path("metrics.json"), {**metrics, "data/source": summary})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(run.path("ray"), ignore_errors=True)
    run.finish([*model_outputs, "eval.json", "metrics.json", "metrics.jsonl"], metrics=metrics)
    _print_summary(report["summary"])
    print(f"rm: done -> {target}")
    return run.dir


def _evaluate(cfg: RMConfig, model_dir: Path, train_pairs: list[PreferencePair], eval_pairs: list[PreferencePair]
              ) -> dict[str, Any]:
    """Held-out accuracy (overall, by agreement), calibration, length bias, reward stats, best-of-n."""
    import numpy as np

    from rlhf.eval import rm_metrics as rm_eval
    from rlhf.models.loader import load_model, load_tokenizer

    model = load_model(str(model_dir), "reward", dtype=cfg.model.dtype, device=cfg.model.device)
    tokenizer = load_tokenizer(str(model_dir))

    def score(pairs: list[PreferencePair], attr: str) -> np.ndarray:
        return np.array(reward_scores(model, tokenizer, [p.conversation() for p in pairs],
                                      [getattr(p, attr) for p in pairs], cfg.eval.batch_size, cfg.train.max_length,
                                      progress=f"rm eval: {attr} replies"))

    rc, rr = score(eval_pairs, "chosen"), score(eval_pairs, "rejected")
    agreement = np.array([p.agreement for p in eval_pairs])
    probs = rm_eval.sigmoid(rc - rr)
    temperature = rm_eval.fit_temperature(rc - rr, agreement)
    prompts = [p.prompt_id for p in eval_pairs]
    calibrated = rm_eval.cross_fitted_probs(rc - rr, agreement, prompts) if len(set(prompts)) >= 2 else None

    def words(pairs: list[PreferencePair], attr: str) -> list[int]:
        return [len(getattr(p, attr).split()) for p in pairs]

    direction, length_acc = rm_eval.length_baseline(words(train_pairs, "chosen"), words(train_pairs, "rejected"),
                                                    words(eval_pairs, "chosen"), words(eval_pairs, "rejected"))
    stats_pairs = random.Random(cfg.run.seed).sample(train_pairs, min(len(train_pairs),
                                                                      cfg.eval.stats_max_responses // 2))
    train_rewards = np.concatenate([score(stats_pairs, "chosen"), score(stats_pairs, "rejected")])
    summary = {
        "accuracy": rm_eval.pairwise_accuracy(rc, rr),
        "length_baseline_accuracy": length_acc,
        "ece": rm_eval.expected_calibration_error(*rm_eval.both_orders(probs, agreement), cfg.eval.calibration_bins),
        "temperature": temperature,
        "reward_length_corr": rm_eval.pearson(np.concatenate([rc, rr]),
                                              words(eval_pairs, "chosen") + words(eval_pairs, "rejected")),
        "mean_margin": float(np.mean(rc - rr)),
    }
    report: dict[str, Any] = {
        "summary": summary,
        "pairs": len(eval_pairs),
        "length_baseline_direction": direction,
        "accuracy_by_agreement": rm_eval.accuracy_by_agreement(rc, rr, agreement, cfg.eval.agreement_edges),
        "calibration": rm_eval.calibration_bins(*rm_eval.both_orders(probs, agreement), cfg.eval.calibration_bins),
        "reward_stats": {**rm_eval.reward_stats(train_rewards), "temperature": temperature,
                         "source": "training responses (chosen and rejected); temperature: fitted on held-out pairs"},
    }
    if calibrated is not None:
        summary["ece_calibrated"] = rm_eval.expected_calibration_error(
            *rm_eval.both_orders(calibrated, agreement), cfg.eval.calibration_bins)
        report["calibration_after"] = rm_eval.calibration_bins(*rm_eval.both_orders(calibrated, agreement),
                                                               cfg.eval.calibration_bins)
    bon_prompts = cfg.eval.best_of_n_prompts
    if bon_prompts is None:
        bon_prompts = 0 if cfg.data.format == "hh" else 64
    if bon_prompts and cfg.eval.best_of_n:
        curve = _best_of_n(model, tokenizer, bon_prompts, max(cfg.eval.best_of_n), cfg.run.seed, cfg.eval.batch_size)
        report["best_of_n"] = rm_eval.best_of_n_curve(*curve, cfg.eval.best_of_n)
        summary["best_of_n_gold_gain"] = report["best_of_n"][-1]["gold"] - report["best_of_n"][0]["gold"]
    return report


def _best_of_n(model, tokenizer, prompts: int, n: int, seed: int, batch_size: int):
    """[prompts, n] proxy rewards and gold scores of demo-world candidates to held-out prompts."""
    import numpy as np

    from rlhf.world.demo import ResponseQuality, generate_prompts, generate_response, gold_rubric

    rng = random.Random(f"best-of-n:{seed}")
    held_out = generate_prompts(prompts, seed=seed + 10_000)
    texts = [[generate_response(p, ResponseQuality.draw(rng, 0.5), rng) for _ in range(n)] for p in held_out]
    gold = np.array([[gold_rubric(p.text, t) for t in row] for p, row in zip(held_out, texts)])
    flat = reward_scores(model, tokenizer, [[{"role": "user", "content": p.text}] for p in held_out for _ in range(n)],
                         [t for row in texts for t in row], batch_size, progress="rm eval: best-of-n")
    return np.array(flat).reshape(prompts, n), gold


def _print_summary(summary: dict[str, float]) -> None:
    print("rm: " + ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))
