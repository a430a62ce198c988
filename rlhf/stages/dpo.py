"""``rlhf train dpo``: Direct Preference Optimisation on Ray Train workers, offline with TRL's DPOTrainer on
the snapshot's pairs, or online (``online.enabled``) with TRL's OnlineDPOTrainer on pairs the policy samples.

The policy starts from ``model.name_or_path`` (the SFT policy) and the frozen reference is that same
starting point. With ``train.precompute_ref_log_probs`` (default) the reference's summed log-probabilities
of every chosen and rejected reply are computed once before training and cached next to the tokenised data,
so no reference model is kept in memory during training; with LoRA the reference is the base with the
adapter disabled.

Losses (``loss.type``; ``h = log pi(y_c)/ref(y_c) - log pi(y_r)/ref(y_r)``):

* ``sigmoid`` (DPO, Rafailov et al. 2023): ``-log sigmoid(beta h)``;
* ``robust`` (rDPO, Chowdhury et al. 2024): ``(-(1-e) log sigmoid(beta h) + e log sigmoid(-beta h)) / (1-2e)``,
  unbiased when each label is flipped with probability ``e`` (``loss.label_smoothing``);
* ``ipo`` (Azar et al. 2023): ``(h / |y| - 1/(2 beta))^2`` with log-ratios averaged per token.

``loss.sft_weight`` adds ``w x`` the mean per-token negative log-likelihood of the chosen replies (RPO, Pang
et al. 2024): offline DPO lowers the likelihood of chosen replies too, and on a small policy that drifts into
degenerate text; the NLL term keeps the chosen replies likely.

``loss.label_smoothing: agreement`` sets ``e`` from the annotators: ``e = mean(1 - agreement)`` over the
training pairs, the share of votes that went against the majority (a dataset-level estimate: TRL takes one
``e`` for the run, not one per pair). TRL applies ``e`` in the robust loss only, so other types refuse it.

**Online DPO** (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback"; TRL's
``trl.experimental.online_dpo``): the pairs only supply prompts: the distinct training prompts (after the
split, held-out prompts left out; a seeded sample of at most ``online.prompts``). Each step the policy samples
two replies per prompt (transformers ``generate``, ``online.temperature``, ``online.max_new_tokens``), the
frozen reward model ``online.reward_model`` (an RM stage folder, a stage input so the lineage reaches it)
scores both with the chat template as it was trained, the higher one is ``chosen``, and the ``sigmoid`` or
``ipo`` loss above trains on that pair, against the reference (a frozen copy of the starting policy, or with
LoRA the adapter disabled). Scores are divided by the std in the RM's ``reward_stats.json`` (the ranking does
not change; ``online.missing_eos_penalty``, subtracted from replies that never end, is then in std units).
Settings that only mean something for the snapshot's pairs (``best_vs_worst``, ``max_train_pairs``,
``sft_weight``, the robust loss, pair evaluation, precomputed reference log-probs) are refused by the config.

After training, the held-out prompts of the shared evaluation (:mod:`rlhf.eval.heldout`: the ``eval``
section, the same prompts SFT and PPO evaluate with the same ``run.seed``) are answered by the DPO policy and
by the reference (same sampling, same seed) and scored by the rubric: ``eval.json`` holds the win rate of
DPO over the reference (ties count half) with a paired bootstrap 95 % interval, both mean gold scores
(``gold_mean``, ``gold_mean_baseline``) and reply lengths. Training pairs whose prompt is held out are left
out (``data/heldout_pairs_dropped``). The config model is :class:`rlhf.configs.dpo.DPOConfig`.

Outputs (in ``runs/dpo/<name>-<fingerprint>/``): ``model/``, ``eval.json``, ``samples.jsonl``,
``metrics.json``, ``metrics.jsonl`` + ``tensorboard/`` (``train/loss``, ``rewards/chosen``, ``rewards/margins``,
``logps/*``, ...; online also ``objective/scores``, ``objective/scores_margin``, ``objective/kl``,
``val/contain_eos_token``, ... whose last logged values ``metrics.json`` keeps as ``train/objective/scores``,
...), ``manifest.json``.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
from pathlib import Path
from typing import Any

from rlhf.configs.dpo import DPOConfig
from rlhf.core.artifacts import StageRun, atomic_write_json
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.data.pairs import PreferencePair, best_vs_worst, split_pairs
from rlhf.eval.heldout import heldout_comparison, heldout_inputs, heldout_prompts, score_replies, write_samples
from rlhf.stages.rm import prepare_pairs
from rlhf.trainers.hf import deepspeed_dict, last_complete_checkpoint, publish_trained
from rlhf.trainers.ray_train import per_device_batch_size, run_on_ray, trainer_arguments, trl_worker

__all__ = ["DPOConfig", "run_dpo"]

MAX_FLIP_RATE = 0.49

# TRL's online-DPO log keys whose last logged value metrics.json keeps, as ``train/<key>``.
ONLINE_LOG_KEYS = ("objective/scores", "objective/scores_margin", "objective/kl", "objective/entropy",
                   "objective/non_score_reward", "objective/rlhf_reward", "rewards/chosen", "rewards/rejected",
                   "rewards/margins", "rewards/accuracies", "val/contain_eos_token")


def flip_rate(pairs: list[PreferencePair]) -> float:
    """Mean share of votes against the majority, capped below 0.5 (what rDPO/cDPO take as ``e``)."""
    return min(MAX_FLIP_RATE, statistics.fmean(1.0 - p.agreement for p in pairs))


def run_dpo(cfg: DPOConfig) -> Path:
    """Run (or skip, when already complete) the DPO stage; returns the stage folder."""
    from rlhf.models.loader import resolve_model_path

    inputs, pairs, summary = prepare_pairs(cfg.data, cfg.run.root, cfg.run.seed)
    base = resolve_model_path(cfg.model.name_or_path, cfg.model.tiny)
    inputs["policy"] = base
    reward_dir = None
    if cfg.online.enabled:
        reward_dir = _reward_model_dir(cfg.online.reward_model)  # type: ignore[arg-type]
        inputs["reward_model"] = reward_dir
    inputs.update(heldout_inputs(cfg.eval))
    prompts = heldout_prompts(cfg.eval, cfg.run.seed)
    run = open_stage(cfg, inputs=inputs)
    if run.complete:
        print(f"dpo: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _train(cfg, run, pairs, summary, base, prompts, reward_dir)


def _reward_model_dir(path: str) -> Path:
    """The model folder of ``online.reward_model`` (an RM stage folder or its model/ folder)."""
    from rlhf.models.reward import REWARD_STATS_FILE
    from rlhf.roles.inference import reward_model_dir

    try:
        folder = reward_model_dir(path)
    except UserError:
        raise UserError(f"online.reward_model {path} holds no reward model (no config.json or model/config.json); "
                        "point it at an RM stage folder") from None
    if not (folder / REWARD_STATS_FILE).is_file():
        raise UserError(f"online.reward_model {path} has no {REWARD_STATS_FILE}; point it at a folder written by "
                        "rlhf train rm")
    return folder


def _pair_rows(pairs: list[PreferencePair]) -> list[dict[str, Any]]:
    return [{"prompt": p.conversation(), "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs]


def _save_dataset(rows: list[dict[str, Any]], folder: Path) -> None:
    from datasets import Dataset

    if (folder / "dataset_info.json").is_file():  # kept across a resume: its cache holds reference log-probs
        return
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    Dataset.from_list(rows).save_to_disk(str(partial))
    partial.rename(folder)


def _train(cfg: DPOConfig, run: StageRun, pairs: list[PreferencePair], summary: dict[str, Any], base: str,
           prompts: list[str], reward_dir: Path | None) -> Path:
    train_pairs, eval_pairs = split_pairs(pairs, cfg.data.eval_fraction, cfg.run.seed)
    held = set(prompts)
    heldout_dropped = sum(p.prompt in held for p in train_pairs)
    train_pairs = [p for p in train_pairs if p.prompt not in held]
    if not train_pairs:
        raise UserError("no training pairs after the split; lower data.eval_fraction or check the split fields")
    data_dir = run.path("data")
    ckpt_dir = run.path("checkpoints")
    resume = last_complete_checkpoint(ckpt_dir)
    if resume is not None:
        print(f"dpo: resuming from {resume}")
    staging = run.path(".model.partial")
    shutil.rmtree(staging, ignore_errors=True)
    if reward_dir is not None:  # online
        trainer, extra_args, eval_data, data_metrics = _online_setup(cfg, train_pairs, data_dir, reward_dir)
    else:
        trainer, extra_args, eval_data, data_metrics = _offline_setup(cfg, train_pairs, eval_pairs, data_dir)
    args = trainer_arguments(
        output_dir=ckpt_dir, **cfg.train.optimiser_arguments(), eval_steps=cfg.train.eval_steps if eval_data else 0,
        per_device_batch=per_device_batch_size(cfg.train.batch_size, cfg.resources.num_workers, cfg.train.grad_accum),
        seed=cfg.run.seed, use_gpu=cfg.resources.use_gpu, bf16=cfg.model.dtype == "bfloat16",
        deepspeed=deepspeed_dict(cfg.deepspeed))
    args.update(max_length=cfg.train.max_length, beta=cfg.loss.beta, **extra_args)
    if trainer == "online_dpo":
        args.pop("dataset_num_proc")  # OnlineDPOConfig has no such field (it tokenises while training)
    payload = {
        "base": base, "dtype": cfg.model.dtype, "seed": cfg.run.seed, "args": args, "trainer": trainer,
        "lora": cfg.model.lora.model_dump() if cfg.model.lora.enabled else None,
        "train_data": str(data_dir / "train"), "eval_data": eval_data,
        "reward_model": str(reward_dir) if reward_dir else None,
        "resume": str(resume) if resume else None, "model_dir": str(staging),
        "adapter_dir": str(run.path(".adapter.partial")),
        "metrics": str(run.path("metrics.jsonl")), "tensorboard": str(run.path("tensorboard")),
    }
    final = run_on_ray(trl_worker, payload, cfg.resources, storage=run.path("ray"), name="dpo")
    target = run.path("model")
    model_outputs = publish_trained(staging, run.dir, cfg.model.lora.saved)

    metrics: dict[str, Any] = {
        "train/global_step": final.get("global_step"), "train/final_loss": final.get("final_loss"),
        "train/resumed_from_step": final.get("resumed_from_step"), **data_metrics,
        "data/eval_pairs": len(eval_pairs), "data/heldout_pairs_dropped": heldout_dropped}
    if trainer == "online_dpo":
        metrics.update(_last_logged(run.path("metrics.jsonl"), ONLINE_LOG_KEYS))
    outputs = [*model_outputs, "metrics.json", "metrics.jsonl"]
    if prompts:
        report = _evaluate(cfg, prompts, target, base, run)
        atomic_write_json(run.path("eval.json"), report)
        metrics.update({f"eval/{k}": v for k, v in report["summary"].items()})
        outputs += ["eval.json", "samples.jsonl"]
        print("dpo: " + ", ".join(f"{k}={v:.3f}" for k, v in report["summary"].items()))
    atomic_write_json(run.path("metrics.json"), {**metrics, "data/source": summary})
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.rmtree(run.path("ray"), ignore_errors=True)
    run.finish(outputs, metrics=metrics)
    print(f"dpo: done -> {target}")
    return run.dir


def _offline_setup(cfg: DPOConfig, train_pairs: list[PreferencePair], eval_pairs: list[PreferencePair],
                   data_dir: Path) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """Offline DPO: (trainer kind, DPOConfig arguments, eval dataset or None, data metrics); saves the pairs."""
    if cfg.data.train_pairs == "best_vs_worst":
        train_pairs = best_vs_worst(train_pairs)
    if cfg.data.max_train_pairs is not None and len(train_pairs) > cfg.data.max_train_pairs:
        train_pairs = random.Random(cfg.run.seed).sample(train_pairs, cfg.data.max_train_pairs)
    smoothing = flip_rate(train_pairs) if cfg.loss.label_smoothing == "agreement" else cfg.loss.label_smoothing
    _save_dataset(_pair_rows(train_pairs), data_dir / "train")
    with_eval = cfg.train.eval_steps > 0 and bool(eval_pairs)
    if with_eval:
        _save_dataset(_pair_rows(eval_pairs), data_dir / "eval")
    loss_types, loss_weights = [cfg.loss.type], [1.0]
    if cfg.loss.sft_weight > 0:
        loss_types, loss_weights = [cfg.loss.type, "sft"], [1.0, cfg.loss.sft_weight]
    args = {"loss_type": loss_types, "loss_weights": loss_weights, "label_smoothing": smoothing,
            "precompute_ref_log_probs": cfg.train.precompute_ref_log_probs}
    return ("dpo", args, str(data_dir / "eval") if with_eval else None,
            {"train/label_smoothing": smoothing, "data/train_pairs": len(train_pairs)})


def _online_setup(cfg: DPOConfig, train_pairs: list[PreferencePair], data_dir: Path, reward_dir: Path
                  ) -> tuple[str, dict[str, Any], None, dict[str, Any]]:
    """Online DPO: (trainer kind, OnlineDPOConfig arguments, no eval dataset, data metrics); saves the prompts."""
    from rlhf.models.reward import REWARD_STATS_FILE

    conversations = list({json.dumps(p.conversation()): p.conversation() for p in train_pairs}.values())
    if len(conversations) > cfg.online.prompts:
        conversations = random.Random(cfg.run.seed).sample(conversations, cfg.online.prompts)
    _save_dataset([{"prompt": conversation} for conversation in conversations], data_dir / "train")
    std = float(json.loads((reward_dir / REWARD_STATS_FILE).read_text(encoding="utf-8")).get("std", 0.0))
    if not std > 0:
        raise UserError(f"{reward_dir / REWARD_STATS_FILE} has std {std}; it must be > 0 (retrain the reward model)")
    args = {"loss_type": cfg.loss.type, "max_new_tokens": cfg.online.max_new_tokens,
            "temperature": cfg.online.temperature, "missing_eos_penalty": cfg.online.missing_eos_penalty,
            "reward_weights": [1.0 / std]}
    return "online_dpo", args, None, {"data/train_prompts": len(conversations), "data/train_pairs": len(train_pairs)}


def _last_logged(path: Path, keys: tuple[str, ...]) -> dict[str, float]:
    """The last value of each of ``keys`` in a metrics.jsonl, as ``train/<key>``."""
    last: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        last.update({f"train/{k}": row[k] for k in keys if k in row})
    return last


def _evaluate(cfg: DPOConfig, prompts: list[str], policy_dir: Path, reference: str, run: StageRun) -> dict[str, Any]:
    """Rubric win rate of the DPO policy over the reference on the held-out prompts; writes samples.jsonl."""
    from rlhf.rollout import TransformersRolloutEngine

    replies = {}
    for name, path in (("dpo", str(policy_dir)), ("reference", reference)):
        engine = TransformersRolloutEngine.from_pretrained(path, dtype=cfg.model.dtype, device=cfg.model.device)
        replies[name] = [r.text for r in engine.generate(prompts, cfg.eval.sampling.params(), seed=cfg.run.seed)]
        del engine
    gold = {name: score_replies(prompts, texts, cfg.eval.rubric) for name, texts in replies.items()}
    summary = heldout_comparison(gold["dpo"], gold["reference"], n_boot=cfg.eval.bootstrap, seed=cfg.run.seed)
    summary.update(reply_words=statistics.fmean(len(text.split()) for text in replies["dpo"]),
                   reply_words_baseline=statistics.fmean(len(text.split()) for text in replies["reference"]))
    write_samples(run.path("samples.jsonl"), prompts, replies["dpo"], gold["dpo"], replies["reference"],
                  gold["reference"])
    return {"summary": summary, "prompts": len(prompts), "sampling": cfg.eval.sampling.model_dump(),
            "reference": reference}
