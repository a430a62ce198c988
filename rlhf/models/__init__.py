"""Model loading (policy, reference, reward, critic) and the tiny-model factory.

The config models (:mod:`rlhf.models.config`) import no torch; the loaders (``load_model``,
``load_tokenizer``, ``resolve_model_path`` from :mod:`rlhf.models.loader`) are imported on first use, so
reading a config or printing ``--help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rlhf.models.config import LoraSettings, ModelConfig, TinyModelConfig

if TYPE_CHECKING:
    from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path

__all__ = ["LoraSettings", "ModelConfig", "TinyModelConfig", "load_model", "load_tokenizer", "resolve_model_path"]

_LOADER = ("load_model", "load_tokenizer", "resolve_model_path")


def __getattr__(name: str) -> Any:
    if name not in _LOADER:
        raise AttributeError(f"module 'rlhf.models' has no attribute '{name}'")
    value = getattr(importlib.import_module("rlhf.models.loader"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LOADER})
