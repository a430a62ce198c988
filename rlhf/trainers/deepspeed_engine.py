"""One DeepSpeed engine per learner rank: process group, ZeRO config, torch AdamW, checkpoints.

Each learner actor is one data-parallel rank of its role's own process group (gloo on CPU, NCCL on GPU),
set up from ``RANK``/``WORLD_SIZE``/``MASTER_*`` like a torchrun launch. The optimizer is torch's AdamW
passed to ``deepspeed.initialize`` (no compiled Adam op). Gradient accumulation is DeepSpeed's: a mini-batch
is ``grad_accum_steps`` micro-batches per rank, each loss already normalised by the WHOLE mini-batch's
token count and multiplied by the world size (DeepSpeed averages gradients over ranks), and backward runs
with ``scale_wrt_gas=False``, so the update equals that of the unsplit mini-batch.

Checkpoints are DeepSpeed's (module, optimizer states, ZeRO partitions) plus a ``client_state`` holding
this rank's RNG states; :meth:`DeepSpeedModel.load` restores both.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.models.config import LoraSettings
from rlhf.trainers.hf import DeepSpeedSettings

__all__ = ["DeepSpeedModel", "LearnerSpec", "ds_config", "init_learner_process_group", "node_address", "rng_state",
           "set_rng_state"]


@dataclass(frozen=True)
class LearnerSpec:
    """Everything a learner rank needs to build its model and optimizer.

    ``deepspeed`` is the stages' one DeepSpeed schema (ZeRO stage, offloads; its validator is the only
    check of them); a learner always runs a DeepSpeed engine, so an unset stage is ZeRO 0.
    """

    model_path: str
    dtype: str = "float32"
    device: str = "auto"
    lr: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    lora: LoraSettings | None = None
    seed: int = 0
    threads: int = 1
    gradient_checkpointing: bool = False

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage of the engine (0 when ``deepspeed.zero_stage`` is unset)."""
        return self.deepspeed.stage


def node_address() -> tuple[str, int]:
    """This node's IP address and a free TCP port on it (for a process group's rendezvous)."""
    import socket

    import ray

    address = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return address, int(sock.getsockname()[1])


def init_learner_process_group(rank: int, world_size: int, master_addr: str, master_port: int, backend: str) -> None:
    """Join this role's data-parallel group (the default torch.distributed group of this process)."""
    import deepspeed
    import torch.distributed as dist

    from rlhf.core.paths import share_torch_extensions

    if dist.is_initialized():
        if dist.get_world_size() != world_size:
            raise RuntimeError(f"this process already belongs to a group of {dist.get_world_size()} ranks, "
                               f"not {world_size}; start each learner rank in its own process")
        return
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
    share_torch_extensions()
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) random states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def ds_config(spec: LearnerSpec, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config of a learner rank: batch sizes, clipping, ZeRO stage and offload, precision.

    Offloaded optimizer states stay with torch AdamW (``zero_force_ds_cpu_optimizer: false``), so no
    DeepSpeed Adam op is compiled; offloading parameters (ZeRO-3) keeps them in pinned CPU memory.
    """
    zero: dict[str, Any] = {"stage": spec.zero_stage}
    if spec.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if spec.deepspeed.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    return {
        "train_micro_batch_size_per_gpu": spec.micro_batch_size,
        "gradient_accumulation_steps": spec.grad_accum_steps,
        "train_batch_size": spec.micro_batch_size * spec.grad_accum_steps * world_size,
        "gradient_clipping": spec.max_grad_norm,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "bf16": {"enabled": spec.dtype == "bfloat16"},
        "fp16": {"enabled": spec.dtype == "float16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _checkpoint_layers_in_eval_mode(model: torch.nn.Module) -> None:
    """Let transformers' decoder layers recompute activations while every dropout stays off.

    transformers checkpoints a layer only when that layer's ``training`` flag is set; setting the flag on
    the layer modules alone (not ``.train()``, which recurses) leaves attention and MLP dropout in eval mode.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no transformers decoder layers that support gradient "
                         "checkpointing; set learner.gradient_checkpointing=false")
    for layer in layers:
        layer.training = True


class DeepSpeedModel:
    """A model wrapped in a DeepSpeed engine with torch AdamW; forward with :attr:`engine`."""

    def __init__(self, model: torch.nn.Module, spec: LearnerSpec, world_size: int) -> None:
        import deepspeed

        self.spec = spec
        self.world_size = world_size
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=spec.lr, betas=spec.adam_betas, eps=spec.adam_eps,
                                      weight_decay=spec.weight_decay)
        if spec.gradient_checkpointing:
            from rlhf.trainers.modeling import unwrap

            base = unwrap(model)
            enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.18
            if enable is not None:
                enable({"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config(spec, world_size))
        self.engine.eval()  # dropout off: the PPO ratio compares two evaluations of the same function
        if spec.gradient_checkpointing:
            _checkpoint_layers_in_eval_mode(self.engine)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of ``loss`` (already normalised over the whole mini-batch)."""
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self) -> float | None:
        """Advance one micro-step; at the accumulation boundary the optimizer steps and the grad norm
        (before clipping) is returned, else None."""
        boundary = self.engine.is_gradient_accumulation_boundary()
        norm = self._stage0_grad_norm() if boundary and self.spec.zero_stage == 0 else None
        self.engine.step()
        if not boundary:
            return None
        if norm is None:
            value = self.engine.get_global_grad_norm()
            norm = float(value) if value is not None else float("nan")
        return norm

    def _stage0_grad_norm(self) -> float:
        grads = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def save(self, folder: str | Path, client_state: dict[str, Any]) -> None:
        """DeepSpeed checkpoint of module + optimizer in ``folder`` (every rank calls this)."""
        state = {**client_state, f"rng_rank{self.engine.global_rank}": rng_state()}
        self.engine.save_checkpoint(str(folder), tag="state", client_state=state, save_latest=False)

    def load(self, folder: str | Path) -> dict[str, Any]:
        """Restore module, optimizer and this rank's RNG from :meth:`save`; returns the client state."""
        path, client = self.engine.load_checkpoint(str(folder), tag="state", load_optimizer_states=True,
                                                   load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint in {folder}; the checkpoint folder is incomplete")
        key = f"rng_rank{self.engine.global_rank}"
        if key in client:
            set_rng_state(client[key])
        return client
