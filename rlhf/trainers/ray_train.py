"""Run a TRL (Hugging Face ``Trainer``) training function as Ray Train workers.

The reward-model and DPO stages (offline and online DPO) share this launcher, so one command goes from one
CPU worker to N GPU workers by changing ``resources.num_workers`` / ``resources.worker.num_gpus``:

* the driver connects to the cluster named by ``resources.address`` or ``$RAY_ADDRESS``, or starts a small
  local one (``num_cpus`` = what the workers need, at least 2; no dashboard; a capped object store);
* ``ray.train.torch.TorchTrainer`` starts ``num_workers`` actors with
  ``ScalingConfig(num_workers, use_gpu, resources_per_worker=resources.worker)`` and sets up the torch
  process group on them (gloo on CPU, NCCL on GPU) before calling the training function with a plain
  ``payload`` dict; the HF Trainer (and DeepSpeed, which reuses that process group) then shards batches
  with a distributed sampler;
* inside a worker, :func:`train_in_worker` wraps the trainer with
  ``ray.train.huggingface.transformers.prepare_trainer``, trains (resuming from the checkpoint the driver
  found), saves the final weights and reports the final metrics with ``ray.train.report`` from every
  worker (the call is a barrier).

Checkpoints are the HF Trainer's own ``checkpoint-N`` folders in the stage folder, written by rank 0; the
driver resumes from the newest complete one. They are not copied into Ray's storage (Ray's
``RayTrainReportCallback`` would duplicate every checkpoint); on a multi-node cluster ``run.root`` must
therefore be on storage every node mounts. ``global_batch_size`` is the optimiser batch over all workers:
each worker gets ``global / (workers * grad_accum)`` so 1 and N workers optimise the same objective.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from rlhf.core.cluster import ClusterSettings, RoleResources, connect_ray, worker_env
from rlhf.core.errors import UserError
from rlhf.trainers.hf import no_final_checkpoint

__all__ = [
    "TrainerResources",
    "per_device_batch_size",
    "run_on_ray",
    "scaling_config",
    "train_in_worker",
    "trainer_arguments",
    "trl_worker",
    "worker_rank",
]


class TrainerResources(ClusterSettings):
    """The ``resources`` section of the RM and DPO stages: how many Ray Train workers, what each reserves
    (and, from :class:`~rlhf.core.cluster.ClusterSettings`, which Ray cluster)."""

    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks)")
    worker: RoleResources = Field(default_factory=RoleResources,
                                  description="per worker: num_cpus (also its torch threads), num_gpus (> 0 "
                                  "trains on GPU with NCCL, 0 on CPU with gloo), custom Ray resources")

    @property
    def use_gpu(self) -> bool:
        """Whether the workers train on GPUs (any GPU reserved per worker)."""
        return self.worker.num_gpus > 0


def per_device_batch_size(global_batch: int, num_workers: int, grad_accum: int) -> int:
    """Per-worker micro-batch that keeps the optimiser batch at ``global_batch`` whatever the worker count."""
    shards = num_workers * grad_accum
    if global_batch % shards:
        raise ValueError(f"train.batch_size ({global_batch}) must be divisible by resources.num_workers x "
                         f"train.grad_accum ({num_workers} x {grad_accum}); change one of them")
    return global_batch // shards


def scaling_config(settings: TrainerResources):
    """Ray Train's ``ScalingConfig`` of ``settings``: ``num_workers`` workers, each reserving ``settings.worker``."""
    from ray.train import ScalingConfig

    return ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu,
                         resources_per_worker=settings.worker.as_dict())


def run_on_ray(train_fn: Callable[[dict[str, Any]], None], payload: dict[str, Any], settings: TrainerResources,
               storage: Path, name: str) -> dict[str, Any]:
    """Run ``train_fn(payload)`` on ``settings.num_workers`` Ray Train workers; returns rank 0's final metrics.

    ``payload`` gains ``result_file``, where :func:`train_in_worker` on rank 0 writes the final metrics (Ray
    Train keeps only metrics reported with a checkpoint in its result). When it resumes (``payload["resume"]``),
    the rows an interrupted run logged to ``payload["metrics"]`` after that checkpoint are dropped first, so
    the resumed run's rows continue the file with no step logged twice.
    """
    import ray
    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer

    from rlhf.core.artifacts import truncate_metrics
    from rlhf.core.paths import share_torch_extensions

    if payload.get("resume") and payload.get("metrics"):
        truncate_metrics(Path(payload["metrics"]), _step_of(payload["resume"]))

    # DeepSpeed's compiled ops are cached here and reused by every worker and later run.
    share_torch_extensions()
    worker = settings.worker
    started = connect_ray(settings.address, math.ceil(settings.num_workers * worker.num_cpus),
                          settings.object_store_mb)
    if started and worker.custom:
        ray.shutdown()
        raise UserError(f"resources.worker.custom asks for {sorted(worker.custom)}, which a locally started Ray "
                        "does not have; set resources.address (or $RAY_ADDRESS) to a cluster that advertises "
                        "them, or remove resources.worker.custom")
    env = worker_env()
    env["OMP_NUM_THREADS"] = str(worker.threads)
    # Ray Train's print patch also logs text that libraries print into a captured stdout (datasets hashing a
    # function through dill prints its disassembly there); plain stdout reaches the driver all the same.
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    result_file = Path(storage).resolve() / f"{name}-result.json"
    result_file.unlink(missing_ok=True)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config={**payload, "result_file": str(result_file)},
        scaling_config=scaling_config(settings),
        run_config=RunConfig(name=name, storage_path=str(Path(storage).resolve()),
                             worker_runtime_env={"env_vars": env}),
    )
    try:
        trainer.fit()
    except Exception as err:  # Ray wraps the worker's exception; report its last line
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UserError(f"training on Ray failed: {message}") from err
    finally:
        if started:
            ray.shutdown()
    if not result_file.is_file():
        raise UserError(f"training on Ray ended without writing {result_file}; see the worker log above")
    return json.loads(result_file.read_text(encoding="utf-8"))


def worker_rank() -> tuple[int, int]:
    """(world rank, world size) of this Ray Train worker."""
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def trainer_arguments(*, output_dir: Path, lr: float, epochs: float, max_steps: int, per_device_batch: int,
                      grad_accum: int, warmup_ratio: float, weight_decay: float, lr_scheduler: str,
                      max_grad_norm: float, logging_steps: int, save_steps: int, eval_steps: int, seed: int,
                      use_gpu: bool, bf16: bool, deepspeed: dict | None, extra: dict[str, Any]) -> dict[str, Any]:
    """TrainingArguments shared by the RM and DPO stages (progress bar on, torch AdamW); ``extra`` holds the
    logging and memory settings (:meth:`rlhf.trainers.hf.HFTrainerSettings.trainer_arguments`)."""
    return {
        "output_dir": str(output_dir),
        "learning_rate": lr,
        "num_train_epochs": epochs,
        "max_steps": max_steps,
        "per_device_train_batch_size": per_device_batch,
        "per_device_eval_batch_size": per_device_batch,
        "gradient_accumulation_steps": grad_accum,
        "warmup_steps": warmup_ratio,
        "weight_decay": weight_decay,
        "lr_scheduler_type": lr_scheduler,
        "max_grad_norm": max_grad_norm,
        "logging_steps": logging_steps,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if eval_steps > 0 else "no",
        "eval_steps": eval_steps if eval_steps > 0 else None,
        "seed": seed,
        "data_seed": seed,
        "optim": "adamw_torch",
        "bf16": bf16 and use_gpu,
        "use_cpu": not use_gpu,
        "disable_tqdm": False,
        "dataset_num_proc": None,
        "ddp_find_unused_parameters": False,
        "deepspeed": deepspeed,
        **extra,
    }


def train_in_worker(trainer, resume: str | None, model_dir: Path, tokenizer, lora_save: str | None,
                    adapter_dir: Path, result_file: str) -> None:
    """Train ``trainer`` (resuming from ``resume``), save final weights to ``model_dir`` (with LoRA, as
    ``lora_save`` says: see :func:`rlhf.trainers.hf.save_lora`), report to Ray and (rank 0) write the final
    metrics to ``result_file``."""
    import ray.train
    from ray.train.huggingface.transformers import prepare_trainer

    trainer = prepare_trainer(trainer)
    if resume and trainer.is_world_process_zero():
        print(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    rank, _ = worker_rank()
    if lora_save:
        if rank == 0:
            from rlhf.trainers.hf import save_lora

            save_lora(trainer.accelerator.unwrap_model(trainer.model), tokenizer, model_dir, adapter_dir, lora_save)
    else:
        trainer.save_model(str(model_dir))  # every rank: DeepSpeed gathers shards, rank 0 writes
    if rank == 0:
        tokenizer.save_pretrained(model_dir)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    final = {"global_step": trainer.state.global_step, "final_loss": float(losses[-1]) if losses else None,
             "resumed_from_step": _step_of(resume)}
    if rank == 0:
        from rlhf.core.artifacts import atomic_write_json

        atomic_write_json(result_file, final)
    ray.train.report(final)


def _step_of(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0


# Which TRL trainer a worker builds, by the ``trainer`` key of its payload: (model role, LoRA task type).
TRAINER_KINDS = {"reward": ("reward", "SEQ_CLS"), "grouped_reward": ("reward", "SEQ_CLS"),
                 "dpo": ("policy", "CAUSAL_LM"), "online_dpo": ("policy", "CAUSAL_LM")}


def trl_worker(payload: dict[str, Any]) -> None:
    """Ray Train worker: build the TRL trainer named by ``payload["trainer"]`` and train it.

    One worker function serves the reward-model and DPO stages; they differ only in the trainer and
    config classes, the model role and the LoRA task type. ``grouped_reward`` trains on prompt rows with
    :class:`rlhf.trainers.grouped_reward.GroupedRewardTrainer`. ``online_dpo`` also loads the frozen reward model
    at ``payload["reward_model"]`` with its own tokenizer; TRL places it on the worker's device (and under
    DeepSpeed) and scores each sampled reply with the chat template, as the RM stage trained it.
    """
    from datasets import load_from_disk

    from rlhf.models.config import LoraSettings
    from rlhf.models.loader import _lora_config, load_model, load_tokenizer
    from rlhf.utils.seed import seed_everything
    from rlhf.utils.trainer_logging import JsonlMetricsCallback

    kind = payload["trainer"]
    role, task_type = TRAINER_KINDS[kind]
    extra: dict[str, Any] = {}
    if kind == "reward":
        from trl import RewardConfig as TrainerConfig
        from trl import RewardTrainer as Trainer
    elif kind == "grouped_reward":
        from trl import RewardConfig as TrainerConfig

        from rlhf.trainers.grouped_reward import GroupedPreferenceCollator
        from rlhf.trainers.grouped_reward import GroupedRewardTrainer as Trainer
    elif kind == "dpo":
        from trl import DPOConfig as TrainerConfig
        from trl import DPOTrainer as Trainer
    else:
        from trl.experimental.online_dpo import OnlineDPOConfig as TrainerConfig
        from trl.experimental.online_dpo import OnlineDPOTrainer as Trainer

    os.environ["TENSORBOARD_LOGGING_DIR"] = payload["tensorboard"]
    seed_everything(payload["seed"])
    tokenizer = load_tokenizer(payload["base"])
    model = load_model(payload["base"], role, dtype=payload["dtype"], device="cpu")
    lora = LoraSettings(**payload["lora"]) if payload["lora"] else None
    if kind == "grouped_reward":
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra = {"data_collator": GroupedPreferenceCollator(pad)}
    elif kind == "online_dpo":
        extra = {"reward_funcs": load_model(payload["reward_model"], "reward", dtype=payload["dtype"], device="cpu"),
                 "reward_processing_classes": load_tokenizer(payload["reward_model"])}
    trainer = Trainer(
        model=model, args=TrainerConfig(**payload["args"]), processing_class=tokenizer,
        train_dataset=load_from_disk(payload["train_data"]),
        eval_dataset=load_from_disk(payload["eval_data"]) if payload["eval_data"] else None,
        peft_config=_lora_config(lora, task_type) if lora else None,
        callbacks=[JsonlMetricsCallback(payload["metrics"], prefix="train/"), no_final_checkpoint()], **extra,
    )
    train_in_worker(trainer, payload["resume"], Path(payload["model_dir"]), tokenizer,
                    lora_save=lora.save if lora else None, adapter_dir=Path(payload["adapter_dir"]),
                    result_file=payload["result_file"])

