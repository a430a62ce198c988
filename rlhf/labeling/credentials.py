"""Secrets of the embedded service: the owner's password and API key, and the server's JWT signing key.

Each secret comes from the environment when set, otherwise from ``<home>/secrets.json``, generated on first
use with ``secrets.token_urlsafe`` and written with mode 0600 (created 0600, never widened). The
environment wins over the file and is not written back, so a deployment can keep every secret in its
secret store. A file whose mode lets others read it is refused rather than used.

======================================  ================================================================
``RLHF_LABEL_OWNER_PASSWORD``           owner password (at least 8 characters, Argilla's minimum)
``RLHF_LABEL_OWNER_API_KEY``            owner API key (what the labeling commands send)
``ARGILLA_AUTH_SECRET_KEY``             JWT secret (fixed, so UI sessions survive a restart)
======================================  ================================================================

Secrets are passed to the server through its environment (readable only by the same user), never on a
command line, and nothing here prints or logs them.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf.core.errors import UserError

__all__ = ["ENV_NAMES", "ServiceSecrets", "load_or_create_secrets", "secrets_as_dict"]

ENV_NAMES = {
    "owner_password": "RLHF_LABEL_OWNER_PASSWORD",
    "owner_api_key": "RLHF_LABEL_OWNER_API_KEY",
    "auth_secret_key": "ARGILLA_AUTH_SECRET_KEY",
}
MIN_PASSWORD = 8


@dataclass(frozen=True)
class ServiceSecrets:
    owner_password: str
    owner_api_key: str
    auth_secret_key: str

    def __repr__(self) -> str:  # keep secrets out of tracebacks and debug output
        return "ServiceSecrets(<hidden>)"

    def values(self) -> tuple[str, ...]:
        """Every secret value (for checking that logs do not contain them)."""
        return (self.owner_password, self.owner_api_key, self.auth_secret_key)


def _generate() -> dict[str, str]:
    return {
        "owner_password": secrets.token_urlsafe(18),
        "owner_api_key": "rlhf." + secrets.token_urlsafe(30),
        "auth_secret_key": secrets.token_hex(32),
    }


def _read(path: Path) -> dict[str, str]:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(f"{path} is readable by other users (mode {mode:o}); run 'chmod 600 {path}'")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not a readable secrets file ({err.__class__.__name__}); "
                        "delete it to generate new secrets") from None
    missing = [key for key in ENV_NAMES if not isinstance(data.get(key), str) or not data[key]]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; delete it to generate new secrets")
    return {key: data[key] for key in ENV_NAMES}


def _write(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create_secrets(path: str | Path, environ: Mapping[str, str] | None = None) -> ServiceSecrets:
    """The service's secrets: environment first, then ``path`` (created 0600 with fresh values if absent)."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    stored = _read(path) if path.exists() else None
    if stored is None and not all(environ.get(name) for name in ENV_NAMES.values()):
        stored = _generate()
        _write(path, stored)
    values = {key: environ.get(env) or (stored or {}).get(key, "") for key, env in ENV_NAMES.items()}
    if len(values["owner_password"]) < MIN_PASSWORD:
        raise UserError(f"{ENV_NAMES['owner_password']} is shorter than {MIN_PASSWORD} characters; "
                        "use a longer password")
    return ServiceSecrets(**values)


def secrets_as_dict(value: ServiceSecrets) -> dict[str, str]:
    """The secrets as a plain mapping (for the server environment)."""
    return asdict(value)
