"""``rlhf submit <stage>``: run a stage as a Ray job on a running cluster and follow its logs.

The job's entrypoint is the same ``rlhf`` command that runs the stage locally, with the same config file
and overrides; only where it runs changes. The project folder travels as the job's ``working_dir``
(virtual environments, run folders and caches excluded). ``run.root`` is made absolute so that the job
writes its run folder where the submitter (and the rest of the pipeline) will look for it: on a cluster,
point it at a filesystem every node shares.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from rlhf.cli.common import add_config_arguments, config_source
from rlhf.core.errors import UserError
from rlhf.stages import STAGES

__all__ = ["STAGE_COMMANDS", "add_parser", "build_entrypoint", "submit_stage"]

# Stage name -> the rlhf subcommand that runs it: the rows of the stage table that run as Ray jobs.
STAGE_COMMANDS: dict[str, list[str]] = {entry.name: list(entry.command) for entry in STAGES if entry.submit}
EXCLUDES = [".venv", ".venv-*", "runs", ".cache", ".git", "test-artifacts", "**/__pycache__", "*.egg-info", ".whl"]


def build_entrypoint(stage: str, config: str | None, overrides: list[str], run_root: str) -> str:
    """The shell command the Ray job runs (``python -m rlhf.cli`` from the working dir)."""
    if stage not in STAGE_COMMANDS:
        raise UserError(f"unknown stage '{stage}' for submit; choose one of {', '.join(STAGE_COMMANDS)}")
    if any(o.startswith("run.root=") for o in overrides):
        root_override: list[str] = []
    else:
        root_override = [f"run.root={run_root}"]
    args = ["python", "-m", "rlhf.cli", *STAGE_COMMANDS[stage]]
    if config:
        args.append(config)
    args += [*overrides, *root_override]
    return shlex.join(args)


def submit_stage(
    address: str,
    stage: str,
    config: str | None,
    overrides: list[str],
    run_root: str,
    working_dir: str,
    env: dict[str, str] | None = None,
    follow: bool = True,
    timeout_s: float | None = None,
) -> tuple[str, str]:
    """Submit the stage; with ``follow``, stream its logs until it ends. Returns (job id, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as err:  # noqa: BLE001  (the SDK raises ConnectionError or RuntimeError subclasses)
        raise UserError(f"cannot reach the Ray job server at {address} ({err.__class__.__name__}); "
                        "start the cluster or pass --address http://HEAD:8265") from None
    runtime_env = {
        "working_dir": working_dir,
        "excludes": EXCLUDES,
        # The stage's own ray.init adds worker variables; let them merge with the job's.
        "env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1",
                     **(env or {})},
    }
    entrypoint = build_entrypoint(stage, config, overrides, run_root)
    job_id = _submit_with_retry(client, entrypoint, runtime_env, stage)
    print(f"submit: job {job_id} on {address}: {entrypoint}", flush=True)
    if not follow:
        return job_id, str(client.get_job_status(job_id))

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    deadline = None if timeout_s is None else time.time() + timeout_s
    try:
        asyncio.run(asyncio.wait_for(tail(), timeout=timeout_s))
    except asyncio.TimeoutError:
        pass
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = client.get_job_status(job_id)
    while status not in terminal and (deadline is None or time.time() < deadline):
        time.sleep(1.0)
        status = client.get_job_status(job_id)
    return job_id, str(status.value if hasattr(status, "value") else status)


def _submit_with_retry(client, entrypoint: str, runtime_env: dict, stage: str, wait_s: float = 90.0) -> str:
    """Submit, retrying while a freshly started head has no job agent ready yet."""
    deadline = time.time() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, metadata={"rlhf_stage": stage})
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.time() > deadline:
                raise UserError(f"the Ray job server refused the job: {err}") from None
            time.sleep(2.0)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit", help="run a stage as a Ray job on a running cluster and follow its logs",
        description="Submit a stage (same config and overrides as locally) to a Ray cluster's job server.")
    parser.add_argument("stage", choices=sorted(STAGE_COMMANDS), help="stage to run")
    add_config_arguments(parser, None)
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                        help="Ray job server address (default: $RAY_ADDRESS or http://127.0.0.1:8265)")
    parser.add_argument("--run-root", default=None,
                        help="absolute run folder root the job writes to (default: ./runs made absolute)")
    parser.add_argument("--working-dir", default=".", help="project folder shipped to the cluster (default: .)")
    parser.add_argument("--no-follow", action="store_true", help="return after submitting")
    parser.add_argument("--timeout", type=float, default=None, help="stop following after this many seconds")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config, overrides = config_source(args, f"submit {args.stage}")
    if config is not None and not Path(args.working_dir, config).is_file():
        raise UserError(f"config {config} is not inside the working dir {args.working_dir}; pass a path relative to it")
    run_root = args.run_root or str(Path("runs").resolve())
    job_id, status = submit_stage(args.address, args.stage, config, overrides, run_root,
                                  str(Path(args.working_dir).resolve()), follow=not args.no_follow,
                                  timeout_s=args.timeout)
    print(f"submit: job {job_id} {status}")
    if status == "SUCCEEDED" or (args.no_follow and status in ("PENDING", "RUNNING")):
        return 0
    if status in ("PENDING", "RUNNING"):
        print(f"rlhf: error: --timeout {args.timeout:g} s ran out while job {job_id} is still {status}; "
              f"follow it with `ray job logs --follow {job_id}` or raise --timeout", file=sys.stderr)
    return 1
