"""Shared fixtures: an isolated model cache and run root per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Built tiny models are cached by content key; share one cache across the whole test session.
os.environ.setdefault("RLHF_CACHE", str(REPO / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
