"""Methods mixed into every vLLM worker process (``worker_extension_cls``), called through ``collective_rpc``.

vLLM adds this class to its GPU worker's bases and refuses names the worker already has (``update_weights``,
``sleep``...), so every method here starts with ``rlhf_``. Each runs in one tensor-parallel worker, with
``self.rank`` (the worker's rank in vLLM's world), ``self.device`` and ``self.model_runner.model``.
Arguments arrive msgpack-serialised: names, shapes and dtype names as plain values, tensors as tensors.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["WeightSyncExtension", "load_into"]


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
        from rlhf.ppo.weight_sync import SyncGroup

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.rlhf_sync = SyncGroup(master_addr, master_port, rank_offset + self.rank, world_size, backend, timeout_s)

    def rlhf_receive_weights(self, manifest: list[list]) -> int:
        """Receive one broadcast of ``manifest`` rows ``[name, shape, dtype]`` and load each tensor as it lands."""
        from rlhf.ppo.weight_sync import TensorSpec, receive_tensors

        specs = [TensorSpec(name, tuple(shape), dtype) for name, shape, dtype in manifest]
        return load_into(self.model_runner.model, receive_tensors(self.rlhf_sync, specs))

    def rlhf_load_weights(self, named: list) -> int:
        """Load ``[name, tensor]`` pairs handed over by the caller (the object-store sync)."""
        return load_into(self.model_runner.model, ((name, tensor.to(self.device)) for name, tensor in named))
