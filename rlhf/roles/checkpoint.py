"""Checkpoints of a PPO run and exact resume.

A checkpoint is ``<run>/checkpoints/step-<N>/`` holding the learners' DeepSpeed checkpoints (``policy/``,
``critic/``: weights, optimizer states, each rank's RNG) and ``controller.pt``, the controller's state:
steps done, data position (:class:`rlhf.data.stream.DataPosition`), KL-controller state, the probe batch and the controller's RNG states. The
``COMPLETE`` marker is written last; a folder without it (a kill -9 while saving) is removed at resume.

Metrics rows logged after the checkpoint by the interrupted run are dropped from ``metrics.jsonl`` at
resume, so the resumed run's rows continue the file with no step logged twice.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlhf.core.artifacts import atomic_write_bytes, atomic_write_text, truncate_metrics
from rlhf.data.stream import DataPosition

__all__ = ["ControllerState", "DataPosition", "checkpoint_folder", "latest_checkpoint", "load_controller_state",
           "mark_complete", "prune_checkpoints", "save_controller_state", "truncate_metrics"]

COMPLETE = "COMPLETE"
CONTROLLER_FILE = "controller.pt"


@dataclass
class ControllerState:
    """Everything the controller needs to continue exactly where it stopped."""

    step: int
    data: DataPosition
    kl_controller: dict[str, Any]
    probe_prompt_ids: list[list[int]] = field(default_factory=list)
    probe_response_ids: list[list[int]] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)


def checkpoint_folder(run_dir: Path, step: int) -> Path:
    """The folder of the checkpoint taken after ``step`` steps."""
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def _step_of(folder: Path) -> int | None:
    tail = folder.name.removeprefix("step-")
    return int(tail) if folder.name.startswith("step-") and tail.isdigit() else None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint; incomplete ones are removed."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    found = sorted((p for p in root.iterdir() if _step_of(p) is not None), key=lambda p: _step_of(p) or 0)
    for folder in reversed(found):
        if (folder / COMPLETE).is_file():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
    return None


def save_controller_state(folder: Path, state: ControllerState) -> None:
    """Write ``controller.pt`` atomically."""
    import io

    buffer = io.BytesIO()
    torch.save(asdict(state), buffer)
    atomic_write_bytes(Path(folder) / CONTROLLER_FILE, buffer.getvalue())


def load_controller_state(folder: Path) -> ControllerState:
    """Read what :func:`save_controller_state` wrote."""
    data = torch.load(Path(folder) / CONTROLLER_FILE, weights_only=False)
    data["data"] = DataPosition(**data["data"])
    return ControllerState(**data)


def mark_complete(folder: Path) -> None:
    """Write the completion marker (last)."""
    atomic_write_text(Path(folder) / COMPLETE, "")


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Remove all but the ``keep`` newest complete checkpoints."""
    root = Path(run_dir) / "checkpoints"
    complete = sorted((p for p in root.iterdir() if _step_of(p) is not None and (p / COMPLETE).is_file()),
                      key=lambda p: _step_of(p) or 0)
    for folder in complete[:-keep] if keep > 0 else complete:
        shutil.rmtree(folder, ignore_errors=True)


