"""``rlhf submit`` against a real two-node Ray cluster on this machine (head + a second node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.cli.submit_cmd import build_entrypoint
from rlhf.core.errors import UserError
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

    # Nodes started from the project venv, as `ray start` from an activated venv would be: the job's
    # `python` is the venv's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_port": dashboard_port, "dashboard_host": "127.0.0.1",
        "dashboard_agent_listen_port": free_port(), "object_store_memory": 200 * 1024 * 1024})
    cluster.add_node(num_cpus=1, object_store_memory=200 * 1024 * 1024, dashboard_agent_listen_port=free_port())
    cluster.wait_for_nodes()
    yield f"http://127.0.0.1:{dashboard_port}"
    cluster.shutdown()


PPO_TINY = [
    "reward.function=rlhf.world.demo:gold_rubric", "algorithm.advantage=reinforce_pp", "rollout.prompts_per_step=4",
    "rollout.n=2", "rollout.max_new_tokens=8", "learner.micro_batch_size=4", "algorithm.mini_batch_size=8",
    "learner.lr=1e-3", "train.steps=2", "eval.prompts=0", "data.demo_prompts=16", "train.progress=false",
    "sync.method=broadcast", "resources.colocate=[[policy, reference, reward]]", "resources.reference.num_cpus=0.5",
    "resources.reward.num_cpus=0.5",
]


@pytest.mark.slow
def test_submit_ppo_stage_to_two_node_cluster(two_node_cluster, tmp_path):
    root = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "submit", "ppo", *PPO_TINY, "run.name=submitted",
         "--address", two_node_cluster, "--run-root", str(root), "--timeout", "500"],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SUCCEEDED" in proc.stdout
    manifests = list(root.glob("ppo/submitted-*/manifest.json"))
    assert len(manifests) == 1, proc.stdout[-3000:]
    run_dir = manifests[0].parent
    manifest = json.loads(manifests[0].read_text())
    assert manifest["config"]["train"]["steps"] == 2
    assert (run_dir / "model" / "config.json").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "rollout/score_mean" in r] == [1, 2]
    placement = json.loads((run_dir / "placement.json").read_text())
    assert placement["rollout"] and placement["policy"]


@pytest.mark.slow
def test_submit_fails_when_its_timeout_runs_out_before_the_job_ends(two_node_cluster, tmp_path):
    from ray.job_submission import JobSubmissionClient

    proc = subprocess.run(
        [sys.executable, "-m", "rlhf.cli", "submit", "ppo", *PPO_TINY, "train.steps=50", "run.name=cut",
         "--address", two_node_cluster, "--run-root", str(tmp_path / "runs"), "--timeout", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    job_id = proc.stdout.split("submit: job ", 1)[1].split()[0]
    JobSubmissionClient(two_node_cluster).stop_job(job_id)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"--timeout 1 s ran out while job {job_id} is still" in proc.stderr
