"""kill -9 in the middle of ``rlhf train ppo`` (GRPO, reward function), then resume: the run continues from
its last checkpoint, finishes, and the steps recomputed after the resume repeat the killed run's figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ARGS = ["reward.function=rlhf.world.demo:gold_rubric", "algorithm.advantage=grpo", "rollout.n=2",
        "algorithm.kl.placement=loss", "algorithm.kl.estimator=k3", "rollout.prompts_per_step=4",
        "rollout.max_new_tokens=8", "learner.micro_batch_size=4", "algorithm.mini_batch_size=8",
        "learner.lr=1e-3", "eval.prompts=0", "data.demo_prompts=16", "train.steps=6", "train.save_steps=2",
        "train.progress=false", "resources.object_store_mb=200"]
COMPARED = ("rollout/score_mean", "rollout/response_length", "objective/kl", "train/policy_loss", "train/kl_loss",
            "train/grad_norm")


def _command(root: Path) -> list[str]:
    return [sys.executable, "-m", "rlhf.cli", "train", "ppo", f"run.root={root}", *ARGS]


def _step_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "rollout/score_mean" in row:
            rows.append(row)
    return rows


def test_kill_9_then_resume(tmp_path):
    env = {**os.environ, "TQDM_DISABLE": "1"}
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(_command(tmp_path), stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    deadline = time.monotonic() + 240
    metrics: Path | None = None
    try:
        while time.monotonic() < deadline and first.poll() is None:
            found = list(tmp_path.glob("ppo/*/metrics.jsonl"))
            metrics = found[0] if found else None
            if metrics is not None and any(row["step"] == 3 for row in _step_rows(metrics)):
                break
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started (Ray included)
        first.wait()
    assert metrics is not None, (tmp_path / "first.log").read_text()[-3000:]
    run_dir = metrics.parent
    killed = {row["step"]: row for row in _step_rows(metrics)}
    assert 3 in killed and 6 not in killed, "the kill landed after step 3 and before the end"
    assert not (run_dir / "manifest.json").exists()
    assert (run_dir / "checkpoints" / "step-000002" / "COMPLETE").is_file()

    resumed = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from step-000002 (step 2)" in resumed.stdout
    assert (run_dir / "manifest.json").is_file()
    rows = _step_rows(metrics)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    for step in (1, 2):  # kept from the killed run
        assert rows[step - 1]["time"] == killed[step]["time"]
    for key in COMPARED:  # recomputed after the resume: the same numbers as before the kill
        assert rows[2][key] == pytest.approx(killed[3][key], rel=1e-5, abs=1e-7), key
