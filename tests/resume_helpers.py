"""Kill -9 and resume mechanics shared by the stage resume tests (PPO, DPO; RM and SFT train the same way).

A stage command runs in a subprocess with its own session; SIGKILL goes to that process group and to every
descendant (Ray's workers run in sessions of their own and would otherwise outlive the driver for a while,
still training and writing checkpoints), as a crash of the machine would. The same command is then run
again and must resume; its results are compared with an uninterrupted run of the same config and seed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Process-group variables that an in-process DeepSpeed test may have set; a fresh CLI process must not
# inherit them (it would try to join that group's port).
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def cli_env() -> dict[str, str]:
    """The environment of a stage subprocess: no progress bars, no inherited process group."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return {**env, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def stage_command(stage: str, root: Path, args: list[str]) -> list[str]:
    """``rlhf train <stage> run.root=<root> <args>`` as an argv."""
    return [sys.executable, "-m", "rlhf.cli", "train", stage, f"run.root={root}", *args]


def run_stage(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a stage command to its end; fail the test with its output when it does not exit 0."""
    done = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def kill_9_when(command: list[str], log: Path, ready: Callable[[], bool], timeout: float) -> None:
    """Start ``command`` in its own session and SIGKILL its whole process group as soon as ``ready()``.

    Fails the test when the command exits, or ``timeout`` seconds pass, before ``ready()`` holds.
    """
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=cli_env(), start_new_session=True)
        deadline = time.monotonic() + timeout
        hit = False
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if ready():
                    hit = True
                    break
                time.sleep(0.05)
        finally:
            _kill_9_tree(proc)
    assert hit, f"the run exited or timed out before the kill point:\n{log.read_text()[-3000:]}"


def _kill_9_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process group and every descendant (Ray's raylet and workers run in sessions of their own),
    then wait until all of them are gone, so nothing of the killed run writes into its folder afterwards."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for member in tree:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _, alive = psutil.wait_procs(tree, timeout=60)
    assert not alive, f"still running after SIGKILL: {alive}"


def metric_rows(path: Path, key: str) -> dict[int, dict]:
    """Rows of a ``metrics.jsonl`` holding ``key``, by step; a torn last line is skipped."""
    rows: dict[int, dict] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in row:
            assert row["step"] not in rows, f"step {row['step']} logged twice in {path}"
            rows[row["step"]] = row
    return rows


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors files in a saved model folder."""
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        weights.update(load_file(str(file)))
    assert weights, f"no safetensors in {folder}"
    return weights


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts with the same names."""
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def row_mismatches(resumed: dict[int, dict], reference: dict[int, dict], steps: list[int], keys: tuple[str, ...],
                   tol: float) -> list[str]:
    """Where the resumed run logged, at one of ``steps``, another value of a key than the reference run
    (relative tolerance ``tol``, absolute below 1); empty when all agree."""
    out = []
    for step in steps:
        for key in keys:
            got, want = resumed[step][key], reference[step][key]
            if not abs(got - want) <= tol * max(1.0, abs(want)):
                out.append(f"step {step} {key}: resumed {got!r} != {want!r}")
    return out
