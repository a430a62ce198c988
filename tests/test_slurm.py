"""``jobs/slurm/ray-stage.sbatch`` on a real single-node Slurm (``scripts/slurm-local.sh``) on this machine.

The job starts a Ray head under ``srun``, waits for it, and submits a tiny reward-model stage to the head's job
server with ``rlhf submit``. The stage's Ray Train worker reserves every CPU the job holds, so it runs only
if the head's job step was given the job's ``--cpus-per-task`` (Slurm 22.05-23.02 drops it from ``srun``
steps unless ``SRUN_CPUS_PER_TASK`` is exported; the local Slurm binds each task to its CPUs, as sites do),
and ``rlhf submit`` reaches the job server only if the dashboard listens on the head's routable address.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
SBATCH = REPO / "jobs" / "slurm" / "ray-stage.sbatch"

# The reward-model stage on the tiny demo model, two optimiser steps (tests/test_reward_model.py's model).
RM_TINY = [
    "data.demo_prompts=40", "data.demo_candidates=3", "train.batch_size=8", "train.max_steps=2",
    "train.save_steps=100", "train.logging_steps=1", "eval.best_of_n=[1,2]", "eval.best_of_n_prompts=4",
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=128", "model.tiny.tokenizer_corpus_size=300",
]


@contextlib.contextmanager
def local_slurm():
    """Environment for the Slurm commands of a freshly started local Slurm; stopped afterwards."""
    path = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin"
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if shutil.which(tool, path=path) is None]
    if missing:
        pytest.fail(f"Slurm is not installed ({', '.join(missing)} missing): run `make system-deps`", pytrace=False)
    started = subprocess.run([str(SLURM_LOCAL), "start"], capture_output=True, text=True, timeout=180, check=False)
    assert started.returncode == 0, started.stderr
    folder = started.stdout.strip().splitlines()[-1]
    try:
        yield {**os.environ, "SLURM_CONF": f"{folder}/slurm.conf"}
    finally:
        stopped = subprocess.run([str(SLURM_LOCAL), "stop", folder], capture_output=True, text=True, timeout=180,
                                 check=False)
        assert stopped.returncode == 0, stopped.stderr


def node_cpus(env: dict[str, str]) -> int:
    out = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%c"], env=env, capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip())


def final_state(env: dict[str, str], job_id: str, wait_s: float) -> str:
    """The job's state once Slurm has finished it (COMPLETING lasts while its steps are killed)."""
    deadline = time.time() + wait_s
    while True:
        job = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True,
                             check=True).stdout
        state = re.search(r"JobState=(\S+)", job).group(1)
        if state not in ("PENDING", "RUNNING", "COMPLETING") or time.time() > deadline:
            return state
        time.sleep(0.5)


@pytest.mark.slow
def test_sbatch_runs_a_stage_through_the_ray_job_server(tmp_path):
    root = tmp_path / "runs"
    log = tmp_path / "job.out"
    with local_slurm() as slurm:
        cpus = node_cpus(slurm)
        # The script's own resource lines ask for 2 GPU nodes; this machine is one node without GPUs. The time
        # limit ends a job whose stage waits for CPUs it was never given.
        submitted = subprocess.run(
            ["sbatch", "--parsable", "--nodes=1", f"--cpus-per-task={cpus}", "--gpus-per-node=0",
             "--time=4", f"--output={log}", str(SBATCH), "rm", "configs/rm/demo.yaml", *RM_TINY,
             f"resources.worker.num_cpus={cpus}", "run.name=slurm", f"run.root={root}"],
            env=slurm, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        job_id = submitted.stdout.strip().split(";")[0]
        assert submitted.returncode == 0 and job_id.isdigit(), submitted.stderr
        state = final_state(slurm, job_id, wait_s=420)
    output = log.read_text() if log.is_file() else "(no job output)"
    assert state == "COMPLETED", f"job {job_id} ended {state}:\n{output[-4000:]}"

    # The stage ran as a Ray job, submitted to the head's job server on its routable address.
    submit_line = re.search(r"submit: job (\S+) on http://([0-9.]+):(\d+): python -m rlhf.cli train rm ", output)
    assert submit_line, output[-4000:]
    assert not submit_line.group(2).startswith("127."), submit_line.group(0)
    assert f"submit: job {submit_line.group(1)} SUCCEEDED" in output

    manifests = list(root.glob("rm/slurm-*/manifest.json"))
    assert len(manifests) == 1, output[-4000:]
    run_dir = manifests[0].parent
    manifest = json.loads(manifests[0].read_text())
    assert manifest["config"]["train"]["max_steps"] == 2
    assert manifest["config"]["resources"]["worker"]["num_cpus"] == cpus
    assert (run_dir / "model" / "config.json").is_file()
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
