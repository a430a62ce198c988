"""A transformers ``TrainerCallback`` that mirrors the trainer's logs into namespaced JSONL metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

__all__ = ["JsonlMetricsCallback"]


class JsonlMetricsCallback(TrainerCallback):
    """Append every trainer log (``loss`` -> ``train/loss``) to a JSONL file, one object per log step."""

    def __init__(self, path: str | Path, prefix: str = "train/") -> None:
        self.path = Path(path)
        self.prefix = prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, "time": time.time()}
        for key, value in logs.items():
            if isinstance(value, (int, float)):
                name = key if "/" in key else f"{self.prefix}{key}"
                row[name] = float(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
