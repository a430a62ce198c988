"""Training plumbing shared by every trainer stage: DeepSpeed settings, checkpoints, saving.

One helper serves every stage so that resume, DeepSpeed and saving behave the same in SFT, RM, DPO and PPO.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rlhf.core.config import StrictModel

__all__ = ["DeepSpeedSettings", "HFTrainerSettings", "deepspeed_dict", "last_complete_checkpoint", "lora_outputs",
           "publish_staged", "publish_trained", "save_lora", "save_model"]


class DeepSpeedSettings(StrictModel):
    """DeepSpeed ZeRO, the one schema of every trainer stage (SFT, RM and DPO through the HF Trainer
    integration, where it is off by default; the PPO learners, which always run a DeepSpeed engine and
    read an unset stage as ZeRO 0)."""

    zero_stage: Literal[0, 1, 2, 3] | None = Field(None, description="ZeRO stage; omit to train without DeepSpeed "
                                                   "(PPO learners: ZeRO 0)")
    offload_optimizer: bool = Field(False, description="keep optimizer states in CPU memory (ZeRO 2/3)")
    offload_params: bool = Field(False, description="keep parameters in CPU memory between uses (ZeRO 3)")

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> DeepSpeedSettings:
        if self.offload_optimizer and self.zero_stage not in (2, 3):
            raise ValueError("deepspeed.offload_optimizer needs deepspeed.zero_stage 2 or 3")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("deepspeed.offload_params needs deepspeed.zero_stage=3")
        return self

    @property
    def stage(self) -> int:
        """The ZeRO stage, 0 when unset."""
        return self.zero_stage or 0


class HFTrainerSettings(StrictModel):
    """Where the HF Trainer of SFT, RM and DPO logs and how it trades compute for memory (the ``train`` section)."""

    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                         "memory for a real model, about a third more compute")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"], description="where training logs go besides metrics.jsonl "
        "(TensorBoard in the run folder; wandb and mlflow read their usual environment variables)")

    @field_validator("report_to")
    @classmethod
    def _installed(cls, value: list[str]) -> list[str]:
        for name in value:
            if importlib.util.find_spec(name) is None:
                raise ValueError(f"train.report_to names {name} but the {name} package is not installed; "
                                 f"pip install {name} or remove it from train.report_to")
        return value

    def trainer_arguments(self) -> dict:
        """The TrainingArguments these settings set (transformers 5 names activation checkpointing so; the
        ``gradient_checkpointing`` attributes mirror it)."""
        return {"activation_checkpointing": self.gradient_checkpointing, "report_to": list(self.report_to) or ["none"],
                "activation_checkpointing_kwargs": {"use_reentrant": False} if self.gradient_checkpointing else None}


def deepspeed_dict(settings: DeepSpeedSettings) -> dict | None:
    """The DeepSpeed config the HF Trainer integration takes ('auto' values are filled by the Trainer).

    Outside a launcher, the single-process environment is set so DeepSpeed picks gloo on CPU.
    """
    if settings.zero_stage is None:
        return None
    from rlhf.utils.distributed import ensure_single_process_env

    ensure_single_process_env()
    zero: dict = {"stage": settings.zero_stage}
    if settings.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if settings.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": "auto"},
    }


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest ``checkpoint-N`` whose trainer state and weights were written; half-written ones are removed."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    for candidate in reversed(found):
        if (candidate / "trainer_state.json").is_file() and any(candidate.glob("*.safetensors")):
            return candidate
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def save_model(model, tokenizer, target: Path) -> Path:
    """Save weights (safetensors) and tokenizer into ``target`` through a staging folder and a rename."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def publish_staged(staging: Path, target: Path) -> Path:
    """Replace ``target`` by the folder written at ``staging`` (a rename, so readers never see half of it)."""
    shutil.rmtree(target, ignore_errors=True)
    Path(staging).rename(target)
    return Path(target)


def publish_trained(staging: Path, run_dir: Path, lora_save: str | None) -> list[str]:
    """Publish a Ray Train worker's model (``staging``) as ``model/`` and, when merged weights and the adapter
    are both kept, its adapter (``.adapter.partial``) as ``adapter/``; returns the stage outputs they occupy."""
    publish_staged(staging, run_dir / "model")
    if lora_save == "both":
        publish_staged(run_dir / ".adapter.partial", run_dir / "adapter")
    return lora_outputs(lora_save)


def lora_outputs(lora_save: str | None) -> list[str]:
    """The stage outputs a trained model occupies: ``model`` and, when both merged weights and the adapter are
    kept, ``adapter``."""
    return ["model", "adapter"] if lora_save == "both" else ["model"]


def save_lora(peft_model, tokenizer, model_dir: Path, adapter_dir: Path, mode: str):
    """Save a PEFT-wrapped model as ``mode`` says (see :class:`rlhf.models.config.LoraSettings`): the adapter
    (``PeftModel.from_pretrained`` opens it) into ``adapter_dir``, or into ``model_dir`` when it is kept alone;
    the merged weights into ``model_dir``. Returns the model to use afterwards (merged unless adapter-only)."""
    if mode in ("adapter", "both"):
        save_model(peft_model, tokenizer, Path(model_dir if mode == "adapter" else adapter_dir))
    if mode == "adapter":
        return peft_model
    merged = peft_model.merge_and_unload()
    save_model(merged, tokenizer, Path(model_dir))
    return merged


def no_final_checkpoint():
    """A ``TrainerCallback`` that skips the checkpoint of the last step (the final weights are saved anyway).

    A run killed after a checkpoint at ``max_steps`` would resume from it, and the HF Trainer, which only
    checks for the end after a step, would train one step more than asked.
    """
    from transformers import TrainerCallback

    class NoFinalCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps > 0 and state.global_step >= state.max_steps:
                control.should_save = False
            return control

    return NoFinalCheckpoint()
