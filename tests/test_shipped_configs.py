"""Every YAML under configs/ (found recursively) loads and validates against its stage model."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.stages import load_config

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").rglob("*.y*ml"))


def test_configs_exist():
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.stage  # type: ignore[attr-defined]
