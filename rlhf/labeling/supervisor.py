"""The supervisor of the embedded labeling service: Redis, the Argilla server and its rq worker.

``rlhf label serve start`` runs it as a detached process (``python -m rlhf.labeling.supervisor SPEC``),
or in the foreground with ``--foreground``. It:

1. starts ``redis-server`` in the foreground (never daemonized: a daemonized Redis is left behind as a zombie
   when stopped here), on a unix socket in the home folder or on 127.0.0.1, persisting nothing, and waits
   for ``PING``;
2. starts ``argilla_server_plugin/launch_server.py`` with the server venv's interpreter (migrations, text
   index, owner, then uvicorn) and waits until ``/api/v1/version`` answers and the owner's key is accepted on
   ``/api/v1/me``;
3. starts ``argilla_server_plugin/launch_worker.py`` alongside the server and waits until it has registered in
   Redis;
4. marks the service ``running`` in ``service.json`` and watches the three processes: one that dies is
   restarted (at most 3 times in 5 minutes, else the whole service stops as ``failed``);
5. on SIGTERM or SIGINT stops the worker, then the server, then Redis (SIGTERM, then SIGKILL after 15 s),
   removes the run's temporary folder and marks the service ``stopped``.

A start-up failure stops what was started and records a one-line ``error`` naming the part that failed and
the last line of its log. Children get ``PR_SET_PDEATHSIG`` so that they do not outlive a killed supervisor.
Secrets reach the children through their environment; the supervisor never writes them to a log.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlhf.labeling.credentials import ServiceSecrets, load_or_create_secrets
from rlhf.labeling.state import ServiceLayout, ServiceSpec, ServiceState, write_state

__all__ = ["StartupError", "Supervisor", "http_ok", "main", "redis_command"]

STOP_TIMEOUT_S = 15.0
MAX_RESTARTS = 3
RESTART_WINDOW_S = 300.0


class StartupError(RuntimeError):
    """A part of the service could not start; the message is one line naming it."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def redis_command(address: str | int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command to Redis (unix socket path or TCP port on 127.0.0.1); the first reply line."""
    if isinstance(address, int):
        sock = socket.create_connection(("127.0.0.1", address), timeout=timeout)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(address)
    with sock:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        sock.sendall(b"".join(parts))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


def http_ok(url: str, api_key: str | None = None, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 200."""
    request = urllib.request.Request(url, headers={"X-Argilla-Api-Key": api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Child:
    """One supervised process, its log file and its restart history."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    proc: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509 (no threads here)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def last_log_line(self) -> str:
        try:
            lines = [line.strip() for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""


class Supervisor:
    """Runs the service described by a :class:`ServiceSpec` until it is told to stop."""

    def __init__(self, spec: ServiceSpec, secrets: ServiceSecrets, database_url: str | None):
        self.spec = spec
        self.secrets = secrets
        self.layout = ServiceLayout(Path(spec.home))
        self.run_dir = Path(spec.run_dir)
        self.tmp = self.run_dir / "tmp"
        self.redis_address: str | int = spec.redis_port or str(self.layout.redis_socket)
        self.stopping = False
        self.state = ServiceState(status="starting", url=spec.url, run_dir=spec.run_dir, supervisor_pid=os.getpid())
        self.log_file = open(self.run_dir / "supervisor.log", "a", encoding="utf-8")  # noqa: SIM115 (closed by run)
        self.children = self._children(database_url)

    # --------------------------------------------------------------------------------------- set-up
    def _children(self, database_url: str | None) -> dict[str, Child]:
        redis_argv = ["redis-server", "--daemonize", "no", "--save", "", "--appendonly", "no",
                      "--dir", str(self.layout.redis_dir), "--protected-mode", "yes"]
        if self.spec.redis_port:
            redis_argv += ["--port", str(self.spec.redis_port), "--bind", "127.0.0.1"]
            redis_url = f"redis://127.0.0.1:{self.spec.redis_port}/0"
        else:
            redis_argv += ["--port", "0", "--unixsocket", str(self.layout.redis_socket), "--unixsocketperm", "700"]
            redis_url = f"unix://{self.layout.redis_socket}?db=0"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RLHF_LABEL_"))}
        env = {
            **base,
            "ARGILLA_HOME_PATH": str(self.layout.data),
            "ARGILLA_REDIS_URL": redis_url,
            "ARGILLA_AUTH_SECRET_KEY": self.secrets.auth_secret_key,
            "ARGILLA_SEARCH_ENGINE": "sqlsearch",
            "ARGILLA_DATABASE_SQLITE_TIMEOUT": "30",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(self.tmp),
            "RLHF_LABEL_OWNER_USERNAME": self.spec.owner_username,
            "RLHF_LABEL_OWNER_PASSWORD": self.secrets.owner_password,
            "RLHF_LABEL_OWNER_API_KEY": self.secrets.owner_api_key,
            "RLHF_LABEL_WORKSPACE": self.spec.workspace,
        }
        if database_url:
            env["ARGILLA_DATABASE_URL"] = database_url
        plugin = Path(self.spec.plugin_dir)
        python = self.spec.server_python
        server_argv = [python, str(plugin / "launch_server.py"), "--host", self.spec.host, "--port",
                       str(self.spec.port), "--workers", str(self.spec.server_workers)]
        return {
            "redis": Child("redis", redis_argv, dict(base), self.run_dir / "redis.log", self.run_dir),
            "server": Child("server", server_argv, env, self.run_dir / "server.log", self.run_dir),
            "worker": Child("worker", [python, str(plugin / "launch_worker.py")], env,
                            self.run_dir / "worker.log", self.run_dir),
        }

    def log(self, message: str) -> None:
        self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.log_file.flush()

    def _publish(self, status: str, error: str | None = None) -> None:
        self.state.status = status
        self.state.error = error
        self.state.pids = {name: child.proc.pid for name, child in self.children.items() if child.alive()}
        write_state(self.layout.state, self.state)
        self.log(f"status {status}" + (f": {error}" if error else ""))

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.log(f"received signal {signum}; stopping")
        self.stopping = True

    # --------------------------------------------------------------------------------------- start
    def _wait(self, child: Child, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stopping:
                raise StartupError("stopped during start-up")
            if not child.alive():
                code = child.proc.returncode if child.proc is not None else None
                line = child.last_log_line()
                raise StartupError(f"{child.name} exited during start-up (code {code}): {line}")
            if ready():
                return
            time.sleep(0.2)
        raise StartupError(f"{child.name} did not become ready ({what}) within {timeout:.0f}s: "
                           f"{child.last_log_line()}")

    def _redis_ready(self) -> bool:
        try:
            return redis_command(self.redis_address, "PING") == b"+PONG"
        except OSError:
            return False

    def _server_ready(self) -> bool:
        url = self.spec.url
        return http_ok(f"{url}/api/v1/version") and http_ok(f"{url}/api/v1/me", self.secrets.owner_api_key)

    def _worker_ready(self) -> bool:
        try:
            reply = redis_command(self.redis_address, "SCARD", "rq:workers")
        except OSError:
            return False
        return reply.startswith(b":") and int(reply[1:] or 0) > 0

    def _launch(self, name: str) -> None:
        child = self.children[name]
        child.start()
        self.log(f"started {name} (pid {child.proc.pid if child.proc else '?'})")

    def _await_ready(self, name: str) -> None:
        child = self.children[name]
        timeout = self.spec.start_timeout_s
        if name == "redis":
            self._wait(child, self._redis_ready, "PING", min(timeout, 20.0))
        elif name == "server":
            self._wait(child, self._server_ready, f"{self.spec.url}/api/v1/me", timeout)
        else:
            self._wait(child, self._worker_ready, "registered in Redis", timeout)
        self.log(f"{name} ready")

    def start(self) -> None:
        """Redis first; then the server and the worker together (the worker needs no schema to start)."""
        self.layout.redis_dir.mkdir(parents=True, exist_ok=True)
        self.layout.data.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._publish("starting")
        self._launch("redis")
        self._await_ready("redis")
        self._launch("server")
        self._launch("worker")
        self._await_ready("server")
        self._await_ready("worker")
        self._publish("running")

    # --------------------------------------------------------------------------------------- supervise
    def _restart(self, child: Child) -> None:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < RESTART_WINDOW_S] + [now]
        code = child.proc.returncode if child.proc is not None else None
        if len(child.restarts) > MAX_RESTARTS:
            raise StartupError(f"{child.name} keeps exiting (code {code}): {child.last_log_line()}")
        self.log(f"{child.name} exited (code {code}); restarting ({len(child.restarts)}/{MAX_RESTARTS})")
        self._launch(child.name)
        self._await_ready(child.name)
        self._publish("running")

    def supervise(self) -> None:
        while not self.stopping:
            for child in self.children.values():
                if not child.alive() and not self.stopping:
                    self._restart(child)
            time.sleep(0.5)

    def shutdown(self) -> None:
        for name in ("worker", "server", "redis"):
            child = self.children[name]
            if child.alive():
                self.log(f"stopping {name}")
                child.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> int:
        """Start, supervise until a signal, shut down; 0 on a clean stop, 1 on failure."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            self.start()
            self.log(f"serving on {self.spec.url}")
            self.supervise()
        except StartupError as err:
            self._publish("stopping", str(err))
            self.shutdown()
            self._publish("failed", str(err))
            return 1
        except BaseException as err:  # a bug here must not leave the children running
            message = f"supervisor error {err.__class__.__name__}: {err}"
            self.shutdown()
            self._publish("failed", message)
            raise
        self._publish("stopping")
        self.shutdown()
        self._publish("stopped")
        self.log_file.close()
        return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m rlhf.labeling.supervisor <run>/spec.json``: run the service described there."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rlhf.labeling.supervisor <run>/spec.json", file=sys.stderr)
        return 2
    spec = ServiceSpec.load(Path(args[0]))
    secrets = load_or_create_secrets(ServiceLayout(Path(spec.home)).secrets)
    database_url = os.environ.get("RLHF_LABEL_DATABASE_URL") or os.environ.get("ARGILLA_DATABASE_URL")
    return Supervisor(spec, secrets, database_url).run()


if __name__ == "__main__":
    sys.exit(main())
