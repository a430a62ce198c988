"""``rlhf submit`` against a real two-node Ray cluster on this machine (head + a second node)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.commands.submit_cmd import build_entrypoint
from rlhf.errors import UserError
from rlhf.utils.distributed import free_port

REPO = Path(__file__).resolve().parent.parent


def test_entrypoint_is_the_local_command_with_an_absolute_root():
    cmd = build_entrypoint("ppo", "configs/ppo/tiny.yaml", ["train.lr=1e-5"], "/shared/runs")
    assert cmd == "python -m rlhf.cli train ppo configs/ppo/tiny.yaml train.lr=1e-5 run.root=/shared/runs"
    assert "run.root=/x" in build_entrypoint("sft", None, ["run.root=/x"], "/shared/runs")
    assert build_entrypoint("sft", None, ["run.root=/x"], "/shared/runs").count("run.root") == 1
    with pytest.raises(UserError, match="unknown stage 'sftt'"):
        build_entrypoint("sftt", None, [], "/r")


@pytest.fixture(scope="module")
def two_node_cluster():
    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": True, "dashboard_port": dashboard_port, "dashboard_host": "127.0.0.1",
        "object_store_memory": 200 * 1024 * 1024, "resources": {"head": 1}})
    cluster.add_node(num_cpus=1, object_store_memory=200 * 1024 * 1024, resources={"worker_node": 1})
    cluster.wait_for_nodes()
    yield f"http://127.0.0.1:{dashboard_port}"
    cluster.shutdown()


@pytest.mark.slow
def test_submit_prepare_stage_to_cluster(two_node_cluster, tmp_path):
    root = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "submit", "prepare", "configs/prepare/demo.yaml", "source.demo_prompts=80",
         "--address", two_node_cluster, "--run-root", str(root), "--timeout", "300"],
        capture_output=True, text=True, cwd=REPO, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCEEDED" in proc.stdout and "prepare:" in proc.stdout  # the stage's own log line, followed
    manifests = list(root.glob("prepare/*/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["config"]["source"]["demo_prompts"] == 80
