"""Model loading (policy, reference, reward, critic) and the tiny-model factory.

The config models (:mod:`rlhf.models.config`) import no torch; the loaders (``load_model``,
``load_tokenizer``, ``resolve_model_path`` from :mod:`rlhf.models.loader`) are imported on first use, so
reading a config or printing ``--help`` does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf.models.config import LoraSettings, ModelConfig, TinyModelConfig
from rlhf.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path

__all__ = ["LoraSettings", "ModelConfig", "TinyModelConfig", "load_model", "load_tokenizer", "resolve_model_path"]

__getattr__, __dir__ = lazy_attributes(globals(), {"loader": ("load_model", "load_tokenizer", "resolve_model_path")})
