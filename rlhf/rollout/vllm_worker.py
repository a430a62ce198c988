"""Methods mixed into every vLLM worker process (``worker_extension_cls``), called through ``collective_rpc``.

vLLM adds this class to its GPU worker's bases and refuses names the worker already has (``update_weights``,
``sleep``...), so every method here starts with ``rlhf_``. Each runs in one tensor-parallel worker, with
``self.rank`` (the worker's rank in vLLM's world), ``self.device`` and ``self.model_runner.model``.
Arguments arrive msgpack-serialised, and vLLM's decoder does not rebuild a tensor passed as an argument (it
arrives as a list whose data is gone), so tensors travel as plain rows ``[name, dtype, shape, bytes]``
(:func:`pack_tensors`, :func:`unpack_tensor`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["WeightSyncExtension", "load_into", "pack_tensors", "unpack_tensor"]


def pack_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[list]:
    """``[name, dtype name, shape, raw bytes]`` per tensor: plain values that survive vLLM's msgpack RPC."""
    rows = []
    for name, tensor in named:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        rows.append([name, str(flat.dtype).removeprefix("torch."), list(tensor.shape),
                     flat.view(torch.uint8).numpy().tobytes()])
    return rows


def unpack_tensor(row: list, device: torch.device | str = "cpu") -> tuple[str, torch.Tensor]:
    """The ``(name, tensor)`` of a :func:`pack_tensors` row, on ``device``."""
    name, dtype, shape, data = row
    if not data:
        return name, torch.empty(shape, dtype=getattr(torch, dtype), device=device)
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(getattr(torch, dtype))
    return name, flat.reshape(shape).to(device)


def load_into(model, named: Iterable[tuple[str, torch.Tensor]]) -> int:
    """Load ``(hf_name, tensor)`` pairs one at a time with vLLM's ``load_weights``; returns how many."""
    loaded = 0
    for name, tensor in named:
        model.load_weights(weights=[(name, tensor)])
        loaded += 1
    return loaded


class WeightSyncExtension:
    """Weight loading for the rollout engine: from the learner's sync group or from handed-over tensors."""

    def rlhf_parameter_names(self) -> list[str]:
        """The model's parameter names (vLLM's fused names, e.g. ``qkv_proj``)."""
        return [name for name, _ in self.model_runner.model.named_parameters()]

    def rlhf_join_sync_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int,
                             backend: str, timeout_s: float) -> None:
        """Join the learner's weight-sync group at rank ``rank_offset + self.rank``."""
        from rlhf.rollout.weight_transfer import SyncGroup

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.rlhf_sync = SyncGroup(master_addr, master_port, rank_offset + self.rank, world_size, backend, timeout_s)

    def rlhf_receive_weights(self, manifest: list[list]) -> int:
        """Receive one broadcast of ``manifest`` rows ``[name, shape, dtype]`` and load each tensor as it lands."""
        from rlhf.rollout.weight_transfer import TensorSpec, receive_tensors

        specs = [TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in manifest]
        return load_into(self.model_runner.model, receive_tensors(self.rlhf_sync, specs))

    def rlhf_load_weights(self, rows: list[list]) -> int:
        """Load :func:`pack_tensors` rows handed over by the caller (the object-store sync)."""
        return load_into(self.model_runner.model, (unpack_tensor(row, self.device) for row in rows))
