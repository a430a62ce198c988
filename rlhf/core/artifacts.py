"""Run artifacts: content-addressed stage folders, atomic writes, completion markers and lineage.

A stage run lives in ``<root>/<stage>/<name>-<fingerprint[:12]>/``. The fingerprint hashes the stage name,
its resolved configuration (minus where-to-write keys) and the content hashes of its inputs, so the same
inputs and config always map to the same folder:

* ``manifest.json`` is written last, atomically, and only after every declared output exists: it is the
  completion marker. A folder without it is incomplete (a crash, a kill -9) and never looks finished;
  training stages resume from the checkpoints they left in it.
* re-running a completed stage with the same inputs and config finds the manifest and is skipped;
* an input made by another stage counts with that stage run's ``run_id``, so re-running an upstream stage
  (after its folder was deleted, say) re-runs every stage after it;
* the manifest records the resolved config, package versions, git revision, seed, input hashes (with the
  stage folder each input came from) and output hashes, which ``rlhf lineage`` walks back to the start.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "MANIFEST",
    "StageRun",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "begin_stage",
    "build_cache_folder",
    "find_stage_dir",
    "hash_path",
    "lineage",
    "read_manifest",
    "sha256_file",
    "truncate_metrics",
]

MANIFEST = "manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
LOCK = ".lock"
TRACKED_PACKAGES = (
    "rlhf-pipeline", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
    "deepspeed", "ray", "argilla", "evaluate", "tokenizers", "vllm",
)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomic text write (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON write, keys sorted, two-space indent."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def build_cache_folder(target: Path, write: Callable[[Path], None]) -> Path:
    """Create the cache folder ``target`` by ``write(staging)`` into a hidden sibling and one rename, so that
    readers never see half of it; when a concurrent builder renamed first, its folder is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staging.chmod(0o755)
        write(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_path(path: str | Path) -> str:
    """Content hash of a file or a folder (relative names and bytes of every file, in sorted order).

    Inside a completed stage folder the hash recorded in its manifest is reused instead of re-reading
    the bytes; hidden files (locks, temporary files) are ignored.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the stage that produces it first")
    stage_dir = find_stage_dir(path)
    if stage_dir is not None:
        manifest = read_manifest(stage_dir)
        rel = path.relative_to(stage_dir).as_posix()
        if rel == ".":
            return manifest["output_hash"]
        if rel in manifest.get("outputs", {}):
            return manifest["outputs"][rel]
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        rel_parts = child.relative_to(path).parts
        if any(part.startswith(".") for part in rel_parts):
            continue
        digest.update("/".join(rel_parts).encode())
        digest.update(sha256_file(child).encode())
    return digest.hexdigest()


def find_stage_dir(path: str | Path) -> Path | None:
    """The completed stage folder that holds ``path`` (or is it), or None."""
    path = Path(path).resolve()
    for candidate in [path, *path.parents]:
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def read_manifest(stage_dir: str | Path) -> dict[str, Any]:
    """The manifest of a completed stage folder."""
    return json.loads((Path(stage_dir) / MANIFEST).read_text(encoding="utf-8"))


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_revision() -> dict[str, Any]:
    """Git commit of the source tree this package runs from, and whether it has uncommitted changes."""
    src = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10,
                             check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if rev.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _fingerprint(stage: str, config: dict[str, Any], input_hashes: dict[str, str]) -> str:
    payload = json.dumps({"stage": stage, "config": config, "inputs": input_hashes}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class StageRun:
    """One execution of a stage in its folder. Call :meth:`finish` once every output is written."""

    stage: str
    dir: Path
    fingerprint: str
    config: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    seed: int | None
    started_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())

    @property
    def complete(self) -> bool:
        """True when this exact run already finished (its manifest exists)."""
        return (self.dir / MANIFEST).is_file()

    def path(self, rel: str) -> Path:
        """Path of an output inside the stage folder."""
        return self.dir / rel

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder; a lock left by a dead process is taken over."""
        lock = self.dir / LOCK
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                try:
                    pid = int(lock.read_text() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and _pid_alive(pid) and pid != os.getpid():
                    raise RuntimeError(
                        f"{self.dir} is being written by process {pid}; wait for it or stop it first") from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def finish(self, outputs: list[str], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check that every output exists, write the model and dataset cards (:mod:`rlhf.core.cards`), hash the
        outputs and write the manifest (the completion marker)."""
        from rlhf.core.cards import write_cards

        missing = [rel for rel in outputs if not (self.dir / rel).exists()]
        if missing:
            raise RuntimeError(f"stage '{self.stage}' did not produce {missing}; it is not marked complete")
        run_id = uuid.uuid4().hex
        outputs = list(outputs) + write_cards(self.dir, outputs, stage=self.stage, run_id=run_id,
                                              fingerprint=self.fingerprint, inputs=self.inputs, metrics=metrics or {})
        hashes = {rel: hash_path(self.dir / rel) for rel in sorted(outputs)}
        manifest = {
            "run_id": run_id,
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "inputs": self.inputs,
            "outputs": hashes,
            "output_hash": hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest(),
            "seed": self.seed,
            "versions": package_versions(),
            "git": git_revision(),
            "started_at": self.started_at,
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "metrics": metrics or {},
        }
        atomic_write_json(self.dir / MANIFEST, manifest)
        return manifest


def begin_stage(
    stage: str,
    config: dict[str, Any],
    inputs: dict[str, str | Path],
    root: str | Path,
    name: str = "run",
    seed: int | None = None,
) -> StageRun:
    """Resolve the folder of a stage run from its config and the content of its inputs.

    ``config`` is the resolved configuration as plain data, already stripped of keys that only say where
    to write. The returned run's ``complete`` tells whether the identical run already finished.
    """
    input_meta: dict[str, dict[str, Any]] = {}
    for key, value in sorted(inputs.items()):
        path = Path(value).resolve()
        upstream = find_stage_dir(path)
        input_meta[key] = {
            "path": str(path),
            "hash": hash_path(path),
            "stage_dir": str(upstream) if upstream is not None else None,
            "run_id": read_manifest(upstream).get("run_id") if upstream is not None else None,
        }
    # An input made by another stage counts by content and by the run that made it: re-running an
    # upstream stage re-runs everything after it, even when it reproduces the same bytes.
    fp = _fingerprint(stage, config, {k: v["hash"] + (f"@{v['run_id']}" if v["run_id"] else "")
                                      for k, v in input_meta.items()})
    folder = Path(root).resolve() / stage / f"{name}-{fp[:12]}"
    return StageRun(stage=stage, dir=folder, fingerprint=fp, config=config, inputs=input_meta, seed=seed)


def reset_incomplete(run: StageRun, keep: tuple[str, ...] = ()) -> None:
    """Remove what an interrupted run left in its folder, except the entries named in ``keep``."""
    if run.complete or not run.dir.exists():
        return
    for child in run.dir.iterdir():
        if child.name in keep or child.name == LOCK:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def lineage(path: str | Path) -> list[dict[str, Any]]:
    """The chain of stage manifests behind ``path``: its own stage first, then its inputs, depth first."""
    start = find_stage_dir(path)
    if start is None:
        raise FileNotFoundError(f"{path} is not inside a completed stage folder (no {MANIFEST} above it)")
    seen: set[str] = set()
    chain: list[dict[str, Any]] = []

    def visit(stage_dir: Path, depth: int) -> None:
        if str(stage_dir) in seen:
            return
        seen.add(str(stage_dir))
        manifest = read_manifest(stage_dir)
        chain.append({"depth": depth, "dir": str(stage_dir), **manifest})
        for meta in manifest.get("inputs", {}).values():
            if meta.get("stage_dir") and (Path(meta["stage_dir"]) / MANIFEST).is_file():
                visit(Path(meta["stage_dir"]), depth + 1)

    visit(start, 0)
    return chain


def truncate_metrics(path: Path, last_step: int) -> int:
    """Drop rows logged after ``last_step`` (and a torn last line); returns the rows kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("step", 0)) <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return len(kept)
