"""Which Argilla the labeling commands talk to, and clients for it.

Resolution, first match wins:

1. ``argilla.api_url`` in the config, else ``ARGILLA_API_URL``: an external Argilla. Its key must be in
   the environment variable named by ``argilla.api_key_env`` (``ARGILLA_API_KEY`` by default); keys are
   never read from YAML files.
2. Otherwise the embedded service of ``service.home``: its URL from ``service.json`` (it must be running)
   and the owner's API key from its secrets (``RLHF_LABEL_OWNER_API_KEY`` or ``secrets.json``).

``http_client`` gives the project's raw-API client (retries, one-line errors); ``sdk_client`` gives an
``argilla.Argilla`` for code that prefers the SDK.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlhf.core.errors import UserError
from rlhf.labeling.config import ArgillaConfig, ServiceConfig
from rlhf.labeling.credentials import load_or_create_secrets
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.state import ServiceLayout, pid_alive, read_state

__all__ = ["Connection", "http_client", "resolve_connection", "sdk_client"]


@dataclass(frozen=True)
class Connection:
    """An Argilla URL and the API key to use there."""

    api_url: str
    api_key: str = field(repr=False)
    source: str  # "config" | "environment" | "embedded service"
    timeout_s: float = 30.0
    retries: int = 4


def resolve_connection(
    argilla: ArgillaConfig | None = None,
    service: ServiceConfig | None = None,
    environ: Mapping[str, str] | None = None,
) -> Connection:
    """The Argilla to use (see the module docstring); raises ``UserError`` naming what is missing."""
    argilla = argilla or ArgillaConfig()
    service = service or ServiceConfig()
    environ = os.environ if environ is None else environ
    url = argilla.api_url or environ.get("ARGILLA_API_URL")
    if url:
        key = environ.get(argilla.api_key_env)
        if not key:
            raise UserError(f"{argilla.api_key_env} is not set; export the API key of the Argilla at {url}")
        source = "config" if argilla.api_url else "environment"
        return Connection(url.rstrip("/"), key, source, argilla.timeout_s, argilla.retries)
    layout = ServiceLayout(service.home_path())
    state = read_state(layout.state)
    if state is None or state.status != "running" or not pid_alive(state.supervisor_pid):
        raise UserError(f"the labeling service in {layout.home} is not running; start it with "
                        "'rlhf label serve start', or point at an external Argilla with ARGILLA_API_URL")
    secrets = load_or_create_secrets(layout.secrets, environ)
    return Connection(state.url, secrets.owner_api_key, "embedded service", argilla.timeout_s, argilla.retries)


def http_client(connection: Connection) -> ArgillaHTTP:
    """The raw-API client for ``connection`` (close it, or use it as a context manager)."""
    return ArgillaHTTP(connection.api_url, connection.api_key, connection.timeout_s, connection.retries)


def sdk_client(connection: Connection) -> Any:
    """An ``argilla.Argilla`` SDK client for ``connection`` (imported lazily: the SDK is slow to import)."""
    import argilla as rg

    return rg.Argilla(api_url=connection.api_url, api_key=connection.api_key, timeout=int(connection.timeout_s))
