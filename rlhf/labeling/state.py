"""Where the embedded service keeps its files, and the state file that ``serve start|stop|status`` share.

Layout of a service home (default ``runs/labeling``)::

    <home>/
      secrets.json          owner password, owner API key, JWT secret (mode 0600; see credentials.py)
      service.json          state of the current or last run (no secrets): status, URL, process ids
      data/                 ARGILLA_HOME_PATH: the SQLite database argilla.db (unless a database URL is set)
      redis/                Redis working folder (nothing is persisted: Redis only carries rq jobs)
      runs/<stamp>/         one folder per start: spec.json, supervisor.log, redis.log, server.log,
                            worker.log, tmp/ (the server's TMPDIR, removed at shutdown)

``service.json`` is written atomically by the supervisor at each transition
(``starting -> running -> stopping -> stopped``, or ``failed`` with a one-line ``error``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import atomic_write_json

__all__ = ["ServiceLayout", "ServiceSpec", "ServiceState", "pid_alive", "read_state", "write_state"]

KEEP_RUNS = 10


@dataclass(frozen=True)
class ServiceLayout:
    """Paths inside one service home."""

    home: Path

    @property
    def secrets(self) -> Path:
        return self.home / "secrets.json"

    @property
    def state(self) -> Path:
        return self.home / "service.json"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def redis_socket(self) -> Path:
        return self.home / "redis" / "redis.sock"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    def new_run_dir(self) -> Path:
        """A fresh run folder; the oldest ones beyond the last ``KEEP_RUNS`` are removed."""
        import shutil

        self.runs.mkdir(parents=True, exist_ok=True)
        old = sorted(p for p in self.runs.iterdir() if p.is_dir())
        for stale in old[: max(0, len(old) - KEEP_RUNS + 1)]:
            shutil.rmtree(stale, ignore_errors=True)
        run = self.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        run.mkdir(parents=True)
        return run


@dataclass
class ServiceSpec:
    """Everything the supervisor needs to run the service (written to ``<run>/spec.json``; no secrets)."""

    home: str
    run_dir: str
    host: str
    port: int
    redis_port: int
    workspace: str
    owner_username: str
    server_python: str
    plugin_dir: str  # the argilla_server_plugin/ folder: launch_server.py, launch_worker.py, the search engine
    database_url_set: bool
    start_timeout_s: float = 120.0
    server_workers: int = 2

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> ServiceSpec:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class ServiceState:
    """The content of ``service.json``."""

    status: str  # starting | running | stopping | stopped | failed
    url: str
    run_dir: str
    supervisor_pid: int
    pids: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_state(path: Path, state: ServiceState) -> None:
    state.updated_at = time.time()
    atomic_write_json(path, state.to_dict())


def read_state(path: Path) -> ServiceState | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    try:
        return ServiceState(**data)
    except TypeError:
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
