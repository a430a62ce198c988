"""Where the project caches what it builds: tiny models and DeepSpeed's compiled ops."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "share_torch_extensions"]


def cache_root() -> Path:
    """Folder of built tiny models and compiled ops: ``$RLHF_CACHE`` or ``~/.cache/rlhf-pipeline``."""
    return Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf-pipeline"))


def share_torch_extensions() -> None:
    """Compile DeepSpeed's ops once into the cache, reused by every worker and later run (unless
    ``$TORCH_EXTENSIONS_DIR`` already says where)."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions"))
