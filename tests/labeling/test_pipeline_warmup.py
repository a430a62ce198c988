"""``rlhf pipeline`` starts the labeling service in the background while the SFT stage trains, and stops it
when a stage fails (the real local service)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.labeling import service_status
from rlhf.stages import load_config

pytestmark = pytest.mark.slow

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def test_the_service_starts_while_sft_trains_and_stops_when_a_stage_fails(tmp_path, free_tcp_port, monkeypatch):
    from rlhf.stages import pipeline

    seen = {}

    def failing_sft(cfg, clock, warmup):
        seen["starting"] = warmup is not None and warmup.thread.ident is not None
        raise RuntimeError("SFT failed")  # at once: the service is still starting

    monkeypatch.setattr(pipeline, "_starting_policy", failing_sft)
    cfg = load_config(QUICKSTART, [f"run.root={tmp_path / 'runs'}", f"label.service.home={tmp_path / 'home'}",
                                   f"label.service.port={free_tcp_port}"])
    with pytest.raises(RuntimeError, match="SFT failed"):
        pipeline.run_pipeline(cfg)
    assert seen["starting"], "SFT is about to train, so the service should be starting"
    # The pipeline waited for the start to finish, then stopped the service it had started.
    status = service_status(cfg.labeling_config().service)
    assert status.status == "stopped" and status.run_dir is not None, status.describe()
