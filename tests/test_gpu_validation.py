"""The GPU validation script runs end to end on CPU at the tiny size (its CUDA-only parts say why they skip)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU smoke run; on CUDA run the script itself")
def test_gpu_validation_script_smoke_run_on_cpu(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_validation.py"), "--device", "cpu", "--size", "tiny",
           "--sections", "learner,rollout,sync", "--steps", "1", "--batch", "8", "--micro-batch", "4",
           "--seq-len", "64", "--rollout-batches", "4", "--max-new-tokens", "8", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_validation.json").read_text())
    learner = [r for r in rows if r["section"] == "learner"]
    assert [r["zero_stage"] for r in learner] == [2, 3] and all(r["tokens_per_s"] > 0 for r in learner)
    rollout = {r["engine"]: r for r in rows if r["section"] == "rollout"}
    assert rollout["transformers"]["generated_tokens"] > 0
    assert "needs a CUDA GPU" in rollout["vllm"]["skipped"]
    sync = {r["engine"]: r for r in rows if r["section"] == "sync"}["transformers"]
    assert sync["probe_diff_before"] > 1e-3 and sync["probe_diff_after"] <= 1e-5 and sync["equal_after_sync"]
    assert "section=sync  engine=transformers" in out.stdout  # the closing table


def test_gpu_validation_refuses_the_gpu_stages_on_cpu(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_validation.py"), "--device", "cpu", "--sections", "ppo",
           "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "need CUDA" in out.stderr
