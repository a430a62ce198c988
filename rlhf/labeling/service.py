"""``serve start|stop|status``: run the embedded Argilla service on this machine, detached or in the foreground.

``start_service`` does the checks whose failure the user can fix before anything is spawned, each reported
as one line: ``redis-server`` installed, the HTTP (and Redis) port free, the unix socket path short enough,
the secrets readable. It then ensures the server venv (created once, about a minute; seconds afterwards),
writes the run's ``spec.json`` and starts the supervisor (``supervisor.py``) in its own session, and waits
until the supervisor reports ``running`` (or ``failed``, whose error it raises). Starting a service that is
already running is a no-op that returns its status.

``stop_service`` sends SIGTERM to the supervisor, which stops the worker, the server and Redis in that order;
if the supervisor is gone, processes it left are stopped from the ids in ``service.json``.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlhf.core.errors import UserError
from rlhf.labeling.config import ServiceConfig, repo_root
from rlhf.labeling.credentials import load_or_create_secrets
from rlhf.labeling.server_venv import default_venv_dir, ensure_server_venv, plugin_dir
from rlhf.labeling.state import ServiceLayout, ServiceSpec, ServiceState, pid_alive, read_state, write_state
from rlhf.labeling.supervisor import Supervisor, http_ok

__all__ = ["ServiceStatus", "service_status", "start_service", "stop_service"]

MAX_UNIX_SOCKET_PATH = 100


@dataclass(frozen=True)
class ServiceStatus:
    """What ``serve status`` reports."""

    status: str  # running | starting | stopped | failed | unhealthy | not-started
    url: str | None
    home: Path
    run_dir: Path | None
    pids: dict[str, int]
    error: str | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    def describe(self) -> str:
        parts = [f"labeling service: {self.status}"]
        if self.url:
            parts.append(f"url {self.url}")
        if self.pids:
            parts.append("pids " + ", ".join(f"{k}={v}" for k, v in sorted(self.pids.items())))
        if self.run_dir:
            parts.append(f"logs {self.run_dir}")
        if self.error:
            parts.append(f"error: {self.error}")
        return "; ".join(parts)


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _preflight(config: ServiceConfig, layout: ServiceLayout) -> None:
    if shutil.which("redis-server") is None:
        raise UserError("redis-server is not installed; install it with 'apt-get install -y redis-server' "
                        "(or 'make system-deps')")
    if not _port_free(config.host, config.port):
        raise UserError(f"port {config.port} on {config.host} is already in use; stop what uses it "
                        f"or choose another port with service.port=<port> (label.service.port=<port> in a pipeline)")
    if config.redis_port and not _port_free("127.0.0.1", config.redis_port):
        raise UserError(f"Redis port {config.redis_port} on 127.0.0.1 is already in use; choose another with "
                        "service.redis_port=<port> (label.service.redis_port in a pipeline; 0 for a unix socket)")
    if not config.redis_port and len(str(layout.redis_socket)) > MAX_UNIX_SOCKET_PATH:
        raise UserError(f"the Redis socket path {layout.redis_socket} is too long for a unix socket; use a "
                        "shorter service.home or a TCP port with service.redis_port=<port>")


def _current(layout: ServiceLayout) -> ServiceState | None:
    state = read_state(layout.state)
    if state is not None and state.status in ("starting", "running", "stopping") and pid_alive(state.supervisor_pid):
        return state
    return None


def _status_from(layout: ServiceLayout, state: ServiceState | None) -> ServiceStatus:
    if state is None:
        return ServiceStatus("not-started", None, layout.home, None, {})
    status = state.status
    if status in ("starting", "running", "stopping") and not pid_alive(state.supervisor_pid):
        status = "stopped" if status == "stopping" else "failed"
        error = state.error or "the supervisor is gone (killed?); run 'rlhf label serve start' again"
        return ServiceStatus(status, state.url, layout.home, Path(state.run_dir), {}, error)
    if status == "running" and not http_ok(f"{state.url}/api/v1/version"):
        status = "unhealthy"
    pids = {k: v for k, v in state.pids.items() if pid_alive(v)} if status != "stopped" else {}
    return ServiceStatus(status, state.url, layout.home, Path(state.run_dir), pids, state.error)


def service_status(config: ServiceConfig) -> ServiceStatus:
    """The service's state, with a live health check when it claims to be running."""
    layout = ServiceLayout(config.home_path())
    return _status_from(layout, read_state(layout.state))


def start_service(config: ServiceConfig, foreground: bool = False, venv_dir: Path | None = None) -> ServiceStatus:
    """Start the service (or return the status of the one already running); see the module docstring."""
    layout = ServiceLayout(config.home_path())
    current = _current(layout)
    deadline = time.monotonic() + config.start_timeout_s + 30.0
    while current is not None and current.status == "starting" and time.monotonic() < deadline:
        time.sleep(0.5)  # another start is under way: wait for its outcome
        current = _current(layout)
    if current is not None:
        return _status_from(layout, current)
    _preflight(config, layout)
    load_or_create_secrets(layout.secrets)  # fail here, in the foreground, on a bad secrets file
    python = ensure_server_venv(venv_dir or (Path(config.venv) if config.venv else default_venv_dir()))
    run_dir = layout.new_run_dir()
    spec = ServiceSpec(
        home=str(layout.home), run_dir=str(run_dir), host=config.host, port=config.port,
        redis_port=config.redis_port, workspace=config.workspace, owner_username=config.owner_username,
        server_python=str(python), plugin_dir=str(plugin_dir()),
        database_url_set=bool(config.database_url or os.environ.get("ARGILLA_DATABASE_URL")),
        start_timeout_s=config.start_timeout_s, server_workers=config.server_workers,
    )
    spec.save(run_dir / "spec.json")
    database_url = config.database_url or os.environ.get("ARGILLA_DATABASE_URL")
    if foreground:
        secrets = load_or_create_secrets(layout.secrets)
        print(f"labeling service starting in the foreground on {spec.url} (logs in {run_dir}); Ctrl-C stops it",
              file=sys.stderr)
        code = Supervisor(spec, secrets, database_url).run()
        return _status_from(layout, read_state(layout.state)) if code == 0 else _raise_failed(layout)
    env = dict(os.environ)
    # the supervisor imports this same source tree, installed or not
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root()), *filter(None, [env.get("PYTHONPATH")])])
    if database_url:
        env["RLHF_LABEL_DATABASE_URL"] = database_url
    with open(run_dir / "supervisor.out", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rlhf.labeling.supervisor", str(run_dir / "spec.json")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=run_dir, start_new_session=True)
    return _wait_started(layout, proc, run_dir, config.start_timeout_s + 30.0)


def _raise_failed(layout: ServiceLayout) -> ServiceStatus:
    state = read_state(layout.state)
    error = state.error if state is not None and state.error else "unknown error"
    run_dir = state.run_dir if state is not None else layout.runs
    raise UserError(f"the labeling service failed to start: {error} (logs in {run_dir})")


def _wait_started(layout: ServiceLayout, proc: subprocess.Popen, run_dir: Path, timeout: float) -> ServiceStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(layout.state)
        mine = state is not None and state.supervisor_pid == proc.pid
        if mine and state.status == "running":  # type: ignore[union-attr]
            return _status_from(layout, state)
        if mine and state.status == "failed":  # type: ignore[union-attr]
            proc.wait(30)
            return _raise_failed(layout)
        if proc.poll() is not None:
            if mine and state.status == "failed":  # type: ignore[union-attr]
                return _raise_failed(layout)
            tail = (run_dir / "supervisor.out").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"the labeling service supervisor exited (code {proc.returncode}): {tail[0][:300]} "
                            f"(logs in {run_dir})")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    raise UserError(f"the labeling service did not start within {timeout:.0f}s (logs in {run_dir}); "
                    "raise service.start_timeout_s on a slow machine")


def _is_service_process(pid: int, name: str) -> bool:
    """Guard against a recycled process id: the command line must be the part ``name`` of this service."""
    marker = {"redis": "redis-server", "server": "launch_server.py", "worker": "launch_worker.py"}.get(name)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker is not None and marker in cmdline


def stop_service(config: ServiceConfig, timeout: float = 60.0) -> ServiceStatus:
    """Stop the service (a no-op when it is not running); returns the final status."""
    layout = ServiceLayout(config.home_path())
    state = read_state(layout.state)
    if state is None:
        return _status_from(layout, None)
    if pid_alive(state.supervisor_pid):
        os.kill(state.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(state.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(state.supervisor_pid):
            os.kill(state.supervisor_pid, signal.SIGKILL)
    for name, pid in state.pids.items():  # left by a supervisor that was killed
        if pid_alive(pid) and _is_service_process(pid, name):
            os.kill(pid, signal.SIGTERM)
    final = read_state(layout.state) or state
    if final.status not in ("stopped", "failed"):
        final.status = "stopped"
        final.pids = {}
        write_state(layout.state, final)
    return _status_from(layout, final)
