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

# The SFT policy that stage tests start from: trained once per checkout (content-addressed, so a later
# session with the same config and code finds it complete and skips training).
SFT_TEST_OVERRIDES = ["data.demo_examples=3200", "train.epochs=2", "train.save_steps=1000", "eval.prompts=48"]


@pytest.fixture(scope="session")
def sft_policy() -> Path:
    """Stage folder of a tiny SFT policy trained on the demo world (about 200 optimiser steps)."""
    from rlhf.stages import load_config
    from rlhf.stages.sft import run_sft

    root = REPO / ".cache" / "test-runs"
    cfg = load_config(None, [f"run.root={root}", "run.name=test-policy", *SFT_TEST_OVERRIDES], expect_stage="sft")
    return run_sft(cfg)
