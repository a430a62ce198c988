"""``rlhf train sft``: supervised fine-tuning with TRL's SFTTrainer, producing the base policy.

Reads a prompt-completion corpus (the demo world's by default, or a JSONL file with ``prompt`` and
``completion``), trains on completions only with the model's chat template, checkpoints every
``train.save_steps`` steps into the run folder and resumes from the last complete checkpoint after a
crash. After training it samples replies to held-out demo prompts and scores them with the gold rubric,
reporting the spread of scores (``sft/gold_*``) that later stages improve on.

Outputs (in ``runs/sft/<name>-<fingerprint>/``): ``model/`` (weights + tokenizer), ``samples.jsonl``,
``metrics.json``, ``metrics.jsonl`` + ``tensorboard/`` (``train/*`` from the trainer), ``manifest.json``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.artifacts import StageRun, atomic_write_json, atomic_write_text, hash_path
from rlhf.core.config import RunConfig, StrictModel
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.models.config import ModelConfig
from rlhf.trainers.hf import DeepSpeedSettings, deepspeed_dict, last_complete_checkpoint, save_model

__all__ = ["SFTConfig", "run_sft"]


class SFTDataConfig(StrictModel):
    """The training corpus."""

    path: str | None = Field(None, description="JSONL with 'prompt' and 'completion' (text); omit for the demo world")
    demo_examples: int = Field(6000, ge=10, description="demo-world examples when no path is given")
    demo_good_fraction: float = Field(0.5, ge=0.0, le=1.0, description="per-axis chance of a good reply in the demo corpus")


class SFTTrainConfig(StrictModel):
    """Optimisation settings."""

    lr: float = Field(2e-3, gt=0, description="peak learning rate")
    epochs: float = Field(3.0, gt=0, description="passes over the corpus (ignored when max_steps > 0)")
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: use epochs)")
    batch_size: int = Field(32, ge=1, description="per-device batch size")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(192, ge=16, description="longest tokenised example; longer ones are truncated")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="linear warm-up share of the steps")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate schedule")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    logging_steps: int = Field(10, ge=1, description="log every N steps")
    save_steps: int = Field(100, ge=1, description="checkpoint every N steps (resume point after a crash)")


class SFTSampleConfig(StrictModel):
    """Samples drawn after training to report the gold-score spread."""

    prompts: int = Field(64, ge=0, description="held-out demo prompts to sample (0: skip)")
    max_new_tokens: int = Field(96, ge=1, description="longest sampled reply")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0: greedy)")
    rubric: str | None = Field("rlhf.world.demo:gold_rubric", description="module:function scoring (prompt, reply)")


class SFTConfig(StrictModel):
    """Supervised fine-tuning of the base policy."""

    stage: Literal["sft"] = "sft"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    train: SFTTrainConfig = Field(default_factory=SFTTrainConfig)
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings)
    sample: SFTSampleConfig = Field(default_factory=SFTSampleConfig)

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        if self.data.path is not None and "demo_examples" in self.data.model_fields_set:
            raise ValueError("data.demo_examples only applies without data.path; remove one of them")
        return self


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


def _to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "completion": [{"role": "assistant", "content": r["completion"]}]}
        for r in rows
    ])


def run_sft(cfg: SFTConfig) -> Path:
    """Run (or skip, when already complete) the SFT stage; returns the stage folder."""
    from rlhf.models.loader import load_model, load_tokenizer, pick_device, resolve_model_path

    corpus_path = Path(cfg.data.path) if cfg.data.path else _demo_corpus_file(cfg)
    if not corpus_path.is_file():
        raise UserError(f"data.path {corpus_path} does not exist; point it at a JSONL corpus or omit it")
    base = resolve_model_path(cfg.model.name_or_path, cfg.model.tiny)
    run = open_stage(cfg, inputs={"corpus": corpus_path, "base_model": base})
    if run.complete:
        print(f"sft: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _train(cfg, run, corpus_path, base, load_model, load_tokenizer, pick_device)


def _train(cfg: SFTConfig, run: StageRun, corpus_path: Path, base: str, load_model, load_tokenizer, pick_device) -> Path:
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from rlhf.utils.seed import seed_everything
    from rlhf.utils.trainer_logging import JsonlMetricsCallback

    seed_everything(cfg.run.seed)
    rows = _read_corpus(corpus_path)
    tokenizer = load_tokenizer(base)
    model = load_model(base, "policy", dtype=cfg.model.dtype, device=cfg.model.device)
    device = pick_device(cfg.model.device)
    ckpt_dir = run.path("checkpoints")
    resume = last_complete_checkpoint(ckpt_dir)
    args = TRLSFTConfig(
        output_dir=str(ckpt_dir),
        learning_rate=cfg.train.lr,
        num_train_epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps,
        per_device_train_batch_size=cfg.train.batch_size,
        gradient_accumulation_steps=cfg.train.grad_accum,
        max_length=cfg.train.max_length,
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
        bf16=cfg.model.dtype == "bfloat16" and device.type == "cuda",
        use_cpu=device.type == "cpu",
        gradient_checkpointing=False,
        report_to=["tensorboard"],
        disable_tqdm=False,
        completion_only_loss=True,
        dataset_num_proc=None,
        deepspeed=deepspeed_dict(cfg.deepspeed),
    )
    peft_config = None
    if cfg.model.lora.enabled:
        from rlhf.models.loader import _lora_config

        peft_config = _lora_config(cfg.model.lora, "CAUSAL_LM")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=_to_dataset(rows), processing_class=tokenizer,
        peft_config=peft_config, callbacks=[JsonlMetricsCallback(run.path("metrics.jsonl"), prefix="train/")],
    )
    if resume is not None:
        print(f"sft: resuming from {resume}")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.path("tensorboard"))
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trained = trainer.model
    if cfg.model.lora.enabled:
        trained = trained.merge_and_unload()
    final = save_model(trained, tokenizer, run.path("model"))

    metrics = {"train/global_step": trainer.state.global_step,
               "train/final_loss": _last_loss(trainer.state.log_history),
               "data/examples": len(rows), "data/corpus_sha256": hash_path(corpus_path)}
    outputs = ["model", "metrics.json", "metrics.jsonl"]
    if cfg.sample.prompts > 0 and cfg.sample.rubric:
        metrics.update(_sample_and_score(cfg, trained, tokenizer, run))
        outputs.append("samples.jsonl")
    atomic_write_json(run.path("metrics.json"), metrics)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    run.finish(outputs, metrics=metrics)
    print(f"sft: done -> {final}")
    return run.dir


def _last_loss(history: list[dict]) -> float:
    losses = [row["loss"] for row in history if "loss" in row]
    return float(losses[-1]) if losses else math.nan


def _sample_and_score(cfg: SFTConfig, model, tokenizer, run: StageRun) -> dict[str, float]:
    """Sample replies to held-out demo prompts and summarise their rubric scores."""
    import statistics

    from rlhf.rollout import SamplingParams, TransformersRolloutEngine
    from rlhf.utils.callables import load_callable
    from rlhf.world.demo import generate_prompts

    rubric = load_callable(cfg.sample.rubric)
    prompts = [p.text for p in generate_prompts(cfg.sample.prompts, seed=cfg.run.seed + 10_000)]
    engine = TransformersRolloutEngine(model, tokenizer)
    params = SamplingParams(temperature=cfg.sample.temperature, max_new_tokens=cfg.sample.max_new_tokens)
    replies = engine.generate(prompts, params, seed=cfg.run.seed)
    scores = [float(rubric(p, r.text)) for p, r in zip(prompts, replies)]
    lines = "".join(json.dumps({"prompt": p, "reply": r.text, "gold": s, "finished": r.finished}) + "\n"
                    for p, r, s in zip(prompts, replies, scores))
    atomic_write_text(run.path("samples.jsonl"), lines)
    return {
        "sft/gold_mean": statistics.fmean(scores),
        "sft/gold_std": statistics.pstdev(scores),
        "sft/gold_min": min(scores),
        "sft/gold_max": max(scores),
        "sft/gold_levels": len({round(s, 2) for s in scores}),
        "sft/finished_rate": sum(r.finished for r in replies) / len(replies),
    }
