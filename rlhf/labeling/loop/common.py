"""What push, simulate, status and pull share: the push folder's record of a round, and pseudonyms.

``push.json`` (written by the push into its run folder, next to the slot map) names the dataset, its id and
workspace, the template, the slot fields and the question names; every later command starts from it.

Pseudonyms: snapshots name annotators by ``ann-`` + the first 16 hex digits of HMAC-SHA256(key, username),
never by username or Argilla id. The key is ``$RLHF_PSEUDONYM_KEY`` when set, else ``pseudonym.key`` in the
labeling service's home folder (generated on first use, mode 0600, next to the service's other secrets),
so the same person gets the same pseudonym in every snapshot, the mapping cannot be recomputed without the
key, and ``rlhf label status`` (run by whoever holds the key) shows which pseudonym is whom, so labels
can be traced and rolled back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import MANIFEST
from rlhf.core.errors import UserError
from rlhf.labeling.config import ArgillaConfig, ServiceConfig
from rlhf.labeling.connection import http_client, resolve_connection
from rlhf.labeling.http import ArgillaHTTP

__all__ = ["PUSH_INFO", "PushInfo", "connect", "load_pseudonym_key", "pseudonym", "read_push"]

PUSH_INFO = "push.json"
KEY_ENV = "RLHF_PSEUDONYM_KEY"
KEY_FILE = "pseudonym.key"


@dataclass(frozen=True)
class PushInfo:
    """A completed push: its folder and what it created in Argilla."""

    folder: Path
    dataset: str
    dataset_id: str
    workspace: str
    api_url: str
    template: str
    prompt_field: str
    slot_fields: tuple[str, ...]
    ranking_question: str
    min_submitted: int
    records: int
    honeypots: int

    @classmethod
    def from_json(cls, folder: Path, data: dict[str, Any]) -> PushInfo:
        return cls(folder=folder, dataset=data["dataset"], dataset_id=data["dataset_id"], workspace=data["workspace"],
                   api_url=data["api_url"], template=data["template"], prompt_field=data["prompt_field"],
                   slot_fields=tuple(data["slot_fields"]), ranking_question=data["ranking_question"],
                   min_submitted=int(data["min_submitted"]), records=int(data["records"]),
                   honeypots=int(data["honeypots"]))


def read_push(folder: str | Path | None) -> PushInfo:
    """The record of a completed push folder; one-line errors for a missing or unfinished one."""
    if not folder:
        raise UserError("no push folder given; set push=<run folder of 'rlhf label push'> (runs/label_push/...)")
    path = Path(folder).resolve()
    if not (path / PUSH_INFO).is_file() or not (path / MANIFEST).is_file():
        raise UserError(f"{path} is not a completed push folder (no {PUSH_INFO} and {MANIFEST}); "
                        "run 'rlhf label push' to completion first")
    return PushInfo.from_json(path, json.loads((path / PUSH_INFO).read_text(encoding="utf-8")))


def connect(argilla: ArgillaConfig, service: ServiceConfig) -> ArgillaHTTP:
    """A raw-API client (owner or admin key) for the Argilla the config points at."""
    return http_client(resolve_connection(argilla, service))


def load_pseudonym_key(service: ServiceConfig, environ: dict[str, str] | None = None) -> bytes:
    """The pseudonym key: the environment first, else the service home's key file (created when missing)."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get(KEY_ENV):
        return environ[KEY_ENV].encode("utf-8")
    path = service.home_path() / KEY_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise UserError(f"{path} is readable by other users (mode {mode:o}); run 'chmod 600 {path}'")
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < 32:
            raise UserError(f"{path} holds a key shorter than 32 characters; restore the original key file")
        return key.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    try:
        os.link(tmp, path)  # atomic and exclusive: when two processes race, the first key wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return load_pseudonym_key(service, environ)


def pseudonym(username: str, key: bytes) -> str:
    """The stable pseudonym of ``username`` under ``key``."""
    return "ann-" + hmac.new(key, username.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
