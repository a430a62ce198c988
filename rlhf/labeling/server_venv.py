"""The argilla-server venv: created from ``argilla_server_plugin/requirements-server.txt`` when missing or out
of date.

argilla-server 2.8 pins pydantic~=2.9, fastapi~=0.115, typer<0.10 and urllib3<2, which the ML stack does not
accept, so the server runs from a venv of its own (it only talks HTTP with the rest of the project). The venv
lives in ``.venv-argilla`` at the repository root (or ``$RLHF_ARGILLA_VENV``), outside any service home, so
every service and test session on the machine shares one.

:func:`ensure_server_venv` is idempotent: the venv holds a stamp with the hash of the requirements file and
the interpreter version, written last; when it matches, the call returns at once. Otherwise the folder is
rebuilt (``python -m venv``, ``pip install -r``, ``pip check``). A file lock serialises concurrent callers,
so two processes starting at once build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rlhf.core.errors import UserError
from rlhf.labeling.config import repo_root

__all__ = ["default_venv_dir", "ensure_server_venv", "plugin_dir", "requirements_file", "venv_python"]

STAMP = ".rlhf-server-venv"


def plugin_dir() -> Path:
    """The server side of the labeling service, ``argilla_server_plugin/`` in the source checkout: the
    launchers, the ``sqlsearch`` search engine and the server venv's requirements. It runs in the server venv,
    not in this one, so it is not part of the ``rlhf`` package: ``rlhf label serve`` runs from a checkout."""
    path = repo_root() / "argilla_server_plugin"
    if not (path / "launch_server.py").is_file():
        raise UserError(f"{path} is missing; 'rlhf label serve' runs the Argilla server from the source checkout's "
                        "argilla_server_plugin/ folder: install the project from its checkout ('pip install -e .'), "
                        "or point argilla.api_url at a running Argilla")
    return path


def requirements_file() -> Path:
    return plugin_dir() / "requirements-server.txt"


def default_venv_dir() -> Path:
    env = os.environ.get("RLHF_ARGILLA_VENV")
    return Path(env).expanduser().resolve() if env else repo_root() / ".venv-argilla"


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _wanted_stamp(requirements: Path, python: str) -> str:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    if python == sys.executable:
        version = sys.version.split()[0]
    else:
        version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
    return f"{digest} python-{version}"


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise UserError(f"creating the argilla-server venv failed at '{' '.join(cmd[1:4])}': {tail}; "
                        "check network access to the package index and retry 'rlhf label serve start'")


def ensure_server_venv(
    venv_dir: Path | None = None,
    python: str | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> Path:
    """The venv's interpreter, after creating or refreshing the venv when its stamp is missing or stale."""
    venv_dir = (venv_dir or default_venv_dir()).resolve()
    requirements = requirements_file()
    base_python = python or sys.executable
    wanted = _wanted_stamp(requirements, base_python)
    stamp = venv_dir / STAMP
    if stamp.is_file() and stamp.read_text().strip() == wanted and venv_python(venv_dir).exists():
        return venv_python(venv_dir)

    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(venv_dir.parent / f".{venv_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == wanted and venv_python(venv_dir).exists():
            return venv_python(venv_dir)  # another process built it while this one waited
        started = time.monotonic()
        log(f"labeling: creating the argilla-server venv in {venv_dir} (about a minute, once)")
        if venv_dir.exists():
            shutil.rmtree(venv_dir)
        _run([base_python, "-m", "venv", str(venv_dir)])
        pip = [str(venv_python(venv_dir)), "-m", "pip", "--disable-pip-version-check", "-q"]
        _run(pip + ["install", "-r", str(requirements)])
        _run(pip + ["check"])
        stamp.write_text(wanted + "\n")
        log(f"labeling: argilla-server venv ready in {time.monotonic() - started:.0f}s")
    return venv_python(venv_dir)
