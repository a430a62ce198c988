"""What every stage does the same way: open its run folder, log metrics, report progress."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import StageRun, begin_stage
from rlhf.core.config import StrictModel

__all__ = ["MetricsLogger", "fingerprint_config", "open_stage"]


def fingerprint_config(cfg: StrictModel) -> dict[str, Any]:
    """The resolved config as plain data, minus the keys that only say where to write."""
    data = cfg.model_dump(mode="json")
    run = data.get("run")
    if isinstance(run, dict):
        run.pop("root", None)
    return data


def open_stage(cfg: StrictModel, inputs: dict[str, str | Path]) -> StageRun:
    """The stage run for ``cfg`` (which must have ``stage`` and ``run`` sections) and its inputs."""
    run_cfg = cfg.run  # type: ignore[attr-defined]
    stage_run = begin_stage(
        stage=cfg.stage,  # type: ignore[attr-defined]
        config=fingerprint_config(cfg),
        inputs=inputs,
        root=run_cfg.root,
        name=run_cfg.name,
        seed=run_cfg.seed,
    )
    return stage_run


class MetricsLogger:
    """Namespaced scalar metrics to ``metrics.jsonl`` (append, one object per step) and TensorBoard."""

    def __init__(self, folder: str | Path, tensorboard: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "metrics.jsonl"
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` (names like ``train/loss``) at ``step``."""
        row = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
