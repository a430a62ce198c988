"""``rlhf train sft``: supervised fine-tuning with TRL's SFTTrainer, producing the base policy.

Reads a prompt-completion corpus (the demo world's by default, or a JSONL file with ``prompt`` and
``completion``), trains on completions only with the model's chat template, checkpoints every
``train.save_steps`` steps into the run folder and resumes from the last complete checkpoint after a
crash. After training it samples replies to the held-out prompts of the shared evaluation
(:mod:`rlhf.eval.heldout`: the ``eval`` section, the same prompts DPO and PPO evaluate with the same
``run.seed``) and scores them with the rubric, reporting the spread of scores (``sft/gold_*``) that later
stages improve on. Corpus examples whose prompt is held out are left out of training. The config model is
:class:`rlhf.configs.sft.SFTConfig`.

Outputs (in ``runs/sft/<name>-<fingerprint>/``): ``model/`` (weights + tokenizer), ``samples.jsonl``,
``metrics.json``, ``metrics.jsonl`` + ``tensorboard/`` (``train/*`` from the trainer), ``manifest.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from rlhf.configs.sft import SFTConfig
from rlhf.core.artifacts import StageRun, atomic_write_json, atomic_write_text, hash_path
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.eval.heldout import gold_summary, heldout_inputs, heldout_prompts, score_replies, write_samples
from rlhf.trainers.hf import (
    deepspeed_dict,
    last_complete_checkpoint,
    lora_outputs,
    no_final_checkpoint,
    save_lora,
    save_model,
)

__all__ = ["SFTConfig", "open_sft", "run_sft", "to_dataset", "trainer_config"]


def _demo_corpus_file(cfg: SFTConfig) -> Path:
    """Write the demo corpus once (content-named) so it is an input with a hash like any other."""
    from rlhf.world.demo import sft_corpus

    rows = sft_corpus(cfg.data.demo_examples, seed=cfg.run.seed, good_fraction=cfg.data.demo_good_fraction)
    text = "".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"], "intent": r["intent"]}) + "\n"
                   for r in rows)
    folder = Path(cfg.run.root) / "corpora"
    import hashlib

    path = folder / f"demo-sft-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        atomic_write_text(path, text)
    return path


def _read_corpus(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{number}: not valid JSON; each line must be an object") from None
            for key in ("prompt", "completion"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise UserError(f"{path}:{number}: '{key}' must be a non-empty string")
            rows.append(row)
    if not rows:
        raise UserError(f"{path} holds no examples")
    return rows


def to_dataset(rows: list[dict]):
    """Conversational prompt-completion rows for TRL: the tokenizer's own chat template renders them, and the
    loss covers the completion (the reply and its end-of-turn token) only."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "completion": [{"role": "assistant", "content": r["completion"]}]}
        for r in rows
    ])


def _inputs(cfg: SFTConfig) -> tuple[Path, str, dict[str, str | Path]]:
    """The corpus file, the base model's folder, and every input that names the stage's folder."""
    from rlhf.models.loader import resolve_model_path

    corpus_path = Path(cfg.data.path) if cfg.data.path else _demo_corpus_file(cfg)
    if not corpus_path.is_file():
        raise UserError(f"data.path {corpus_path} does not exist; point it at a JSONL corpus or omit it")
    base = resolve_model_path(cfg.model.name_or_path, cfg.model.tiny)
    return corpus_path, base, {"corpus": corpus_path, "base_model": base, **heldout_inputs(cfg.eval)}


def open_sft(cfg: SFTConfig) -> StageRun:
    """The SFT run (folder and completeness) for ``cfg``, without training."""
    return open_stage(cfg, inputs=_inputs(cfg)[2])


def run_sft(cfg: SFTConfig) -> Path:
    """Run (or skip, when already complete) the SFT stage; returns the stage folder."""
    from rlhf.models.loader import load_model, load_tokenizer, pick_device

    corpus_path, base, inputs = _inputs(cfg)
    prompts = heldout_prompts(cfg.eval, cfg.run.seed)
    run = open_stage(cfg, inputs=inputs)
    if run.complete:
        print(f"sft: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _train(cfg, run, corpus_path, base, prompts, load_model, load_tokenizer, pick_device)


def _train(cfg: SFTConfig, run: StageRun, corpus_path: Path, base: str, prompts: list[str], load_model,
           load_tokenizer, pick_device) -> Path:
    from trl import SFTTrainer

    from rlhf.utils.seed import seed_everything
    from rlhf.utils.trainer_logging import JsonlMetricsCallback

    seed_everything(cfg.run.seed)
    corpus = _read_corpus(corpus_path)
    held = set(prompts)
    rows = [row for row in corpus if row["prompt"] not in held]
    if not rows:
        raise UserError(f"every example of {corpus_path} has a held-out prompt; point data.path at other "
                        "examples or eval.path at other held-out prompts")
    tokenizer = load_tokenizer(base)
    model = load_model(base, "policy", dtype=cfg.model.dtype, device=cfg.model.device)
    device = pick_device(cfg.model.device)
    ckpt_dir = run.path("checkpoints")
    resume = last_complete_checkpoint(ckpt_dir)
    args = trainer_config(cfg, ckpt_dir, device.type)
    peft_config = None
    if cfg.model.lora.enabled:
        from rlhf.models.loader import _lora_config

        peft_config = _lora_config(cfg.model.lora, "CAUSAL_LM")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=to_dataset(rows), processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[JsonlMetricsCallback(run.path("metrics.jsonl"), prefix="train/"), no_final_checkpoint()],
    )
    if resume is not None:
        print(f"sft: resuming from {resume}")
        from rlhf.core.artifacts import truncate_metrics

        # Rows the killed run logged after its checkpoint are logged again by the resumed run.
        truncate_metrics(run.path("metrics.jsonl"), int(resume.name.rsplit("-", 1)[-1]))
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.path("tensorboard"))
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trained = trainer.model
    lora_save = cfg.model.lora.saved
    if lora_save:
        trained = save_lora(trained, tokenizer, run.path("model"), run.path("adapter"), lora_save)
    else:
        save_model(trained, tokenizer, run.path("model"))

    metrics = {"train/global_step": trainer.state.global_step,
               "train/final_loss": _last_loss(trainer.state.log_history),
               "data/examples": len(rows), "data/heldout_examples_dropped": len(corpus) - len(rows),
               "data/corpus_sha256": hash_path(corpus_path)}
    outputs = [*lora_outputs(lora_save), "metrics.json", "metrics.jsonl"]
    if prompts:
        metrics.update(_sample_and_score(cfg, prompts, trained, tokenizer, run))
        outputs.append("samples.jsonl")
    atomic_write_json(run.path("metrics.json"), metrics)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    run.finish(outputs, metrics=metrics)
    print(f"sft: done -> {run.path('model')}")
    return run.dir


def trainer_config(cfg: SFTConfig, ckpt_dir: Path, device_type: str):
    """TRL's SFTConfig for this stage: completion-only loss, TensorBoard or what ``train.report_to`` names,
    checkpoints every ``train.save_steps`` steps."""
    from trl import SFTConfig as TRLSFTConfig

    return TRLSFTConfig(
        output_dir=str(ckpt_dir),
        learning_rate=cfg.train.lr,
        num_train_epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps,
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum,
        max_length=cfg.train.max_length,
        train_sampling_strategy="group_by_length" if cfg.train.group_by_length else "random",
        warmup_steps=cfg.train.warmup_ratio,
        weight_decay=cfg.train.weight_decay,
        lr_scheduler_type=cfg.train.lr_scheduler,
        max_grad_norm=cfg.train.max_grad_norm,
        logging_steps=cfg.train.logging_steps,
        save_strategy="steps",
        save_steps=cfg.train.save_steps,
        save_total_limit=2,
        seed=cfg.run.seed,
        data_seed=cfg.run.seed,
        bf16=cfg.model.dtype == "bfloat16" and device_type == "cuda",
        use_cpu=device_type == "cpu",
        **cfg.train.trainer_arguments(),
        disable_tqdm=False,
        completion_only_loss=True,
        dataset_num_proc=None,
        deepspeed=deepspeed_dict(cfg.deepspeed),
    )


def _last_loss(history: list[dict]) -> float:
    losses = [row["loss"] for row in history if "loss" in row]
    return float(losses[-1]) if losses else math.nan


def _sample_and_score(cfg: SFTConfig, prompts: list[str], model, tokenizer, run: StageRun) -> dict[str, float]:
    """Sample replies to the held-out prompts, write samples.jsonl and summarise their rubric scores."""
    from rlhf.rollout import TransformersRolloutEngine

    engine = TransformersRolloutEngine(model, tokenizer)
    replies = engine.generate(prompts, cfg.eval.sampling.params(), seed=cfg.run.seed)
    texts = [reply.text for reply in replies]
    scores = score_replies(prompts, texts, cfg.eval.rubric)
    write_samples(run.path("samples.jsonl"), prompts, texts, scores)
    return {**{f"sft/{key}": value for key, value in gold_summary(scores).items()},
            "sft/finished_rate": sum(reply.finished for reply in replies) / len(replies)}
