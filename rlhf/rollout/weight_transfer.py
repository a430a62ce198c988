"""The transport of weight sync: a process group of the learner's rank 0 and the rollout engines' ranks,
and the tensors broadcast over it in a fixed order (the manifest).

The group is built from a ``TCPStore`` and a ``ProcessGroupGloo`` (CPU) or ``ProcessGroupNCCL`` (GPU) object,
so it lives beside the learners' DeepSpeed default group instead of replacing it. Both ends use this module:
the learner sends (:func:`send_tensors`), each engine receives into fresh buffers and loads them one at a
time (:func:`receive_tensors`). Who joins, and the check that a sync happened, are
:mod:`rlhf.roles.weight_sync`'s.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["LORA_A", "LORA_B", "SyncGroup", "TensorSpec", "WeightSyncError", "manifest_of", "receive_tensors",
           "send_tensors"]

# Name suffixes of the two factors of a LoRA-adapted weight when a sync sends only the adapters: the engine
# sets ``W = W_base + B @ A`` (:func:`rlhf.trainers.modeling.lora_deltas` sends them).
LORA_A, LORA_B = "@lora_A", "@lora_B"


class WeightSyncError(RuntimeError):
    """The rollout workers' weights are not the learner's."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one synced tensor."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # e.g. "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def manifest_of(named: Iterator[tuple[str, torch.Tensor]]) -> list[TensorSpec]:
    """The manifest (order, names, shapes, dtypes) of the tensors a learner sends."""
    return [TensorSpec(name, tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named]


class SyncGroup:
    """A process group of learner rank 0 (rank 0) and the rollout workers (ranks 1..n).

    Every member constructs it at the same time (construction waits for all ``world_size`` members).
    """

    def __init__(self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str,
                 timeout_s: float = 120.0) -> None:
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"sync backend must be 'gloo' (CPU) or 'nccl' (GPU), got {backend!r}")
        timeout = _dt.timedelta(seconds=timeout_s)
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self._store = dist.TCPStore(master_addr, master_port, world_size, rank == 0, timeout=timeout)
        if backend == "gloo":
            self._group = dist.ProcessGroupGloo(self._store, rank, world_size, timeout)
        else:
            self._group = dist.ProcessGroupNCCL(self._store, rank, world_size)
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def broadcast(self, tensor: torch.Tensor) -> None:
        """Broadcast ``tensor`` from rank 0 into every member's ``tensor`` (in place)."""
        options = dist.BroadcastOptions()
        options.rootRank = 0
        self._group.broadcast([tensor], options).wait()


def send_tensors(group: SyncGroup, named: Iterator[tuple[str, torch.Tensor]], manifest: list[TensorSpec]) -> int:
    """Rank 0: broadcast the tensors of ``named`` in manifest order; returns how many were sent."""
    sent = 0
    for (name, tensor), spec in zip(named, manifest, strict=True):
        if name != spec.name or tuple(tensor.shape) != spec.shape:
            raise WeightSyncError(f"learner tensor '{name}' {tuple(tensor.shape)} does not match the manifest entry "
                                  f"'{spec.name}' {spec.shape}; the model changed shape after the manifest was made")
        group.broadcast(tensor.detach().to(group.device).contiguous())
        sent += 1
    return sent


def receive_tensors(group: SyncGroup, manifest: list[TensorSpec]) -> Iterator[tuple[str, torch.Tensor]]:
    """Ranks 1..n: yield each tensor as it arrives (feed this to an engine's ``load_weights``)."""
    for spec in manifest:
        buffer = torch.empty(spec.shape, dtype=spec.torch_dtype, device=group.device)
        group.broadcast(buffer)
        yield spec.name, buffer
