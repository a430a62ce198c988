"""Typed configuration of the labeling service and of the Argilla the labeling commands talk to.

A YAML file for ``rlhf label ...`` names ``stage: label`` and holds two sections:

* ``service``: the embedded service that ``rlhf label serve start`` runs on this machine (where its data
  lives, its loopback port, the owner account and workspace, the database);
* ``argilla``: which Argilla every other labeling command uses. Empty (the default) means the embedded
  service; ``api_url`` (or ``ARGILLA_API_URL``) points the commands at an external Argilla instead, with the
  key from ``ARGILLA_API_KEY`` (or ``api_key_env``, the name of another variable holding it).

Environment variables override the file where they exist (``ARGILLA_API_URL``, ``ARGILLA_API_KEY``,
``RLHF_LABEL_HOME``, ``ARGILLA_DATABASE_URL``), so one config works locally and in CI.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from rlhf.core.config import StrictModel

__all__ = ["ROLES", "ArgillaConfig", "LabelingConfig", "ServiceConfig", "default_home", "repo_root"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
ROLES = ("annotator", "admin", "owner")  # the roles of an Argilla account


def repo_root() -> Path:
    """The source checkout holding ``rlhf/`` and ``argilla_server_plugin/`` (the labeling service's server side)."""
    return Path(__file__).resolve().parents[2]


def default_home() -> Path:
    """Where the embedded service keeps its data: ``$RLHF_LABEL_HOME``, else ``<repo>/runs/labeling``."""
    env = os.environ.get("RLHF_LABEL_HOME")
    return Path(env).expanduser() if env else repo_root() / "runs" / "labeling"


class ServiceConfig(StrictModel):
    """The embedded Argilla service (``rlhf label serve``)."""

    home: str | None = Field(None, description="data folder of the service (default $RLHF_LABEL_HOME or runs/labeling)")
    host: str = Field("127.0.0.1", description="address the server binds; loopback unless allow_remote is true")
    port: int = Field(6900, ge=1, le=65535, description="HTTP port of the Argilla server and UI")
    allow_remote: bool = Field(False, description="allow a non-loopback host (expose the UI on the network)")
    redis_port: int = Field(0, ge=0, le=65535,
                            description="Redis TCP port on 127.0.0.1; 0 uses a unix socket in the home folder")
    server_workers: int = Field(2, ge=1, le=16,
                                description="HTTP worker processes of the Argilla server (more: more annotators "
                                            "at once, about 250 MB each)")
    workspace: str = Field("rlhf", min_length=1, description="workspace created for annotation datasets")
    owner_username: str = Field("owner", min_length=1, description="the owner account of the service")
    database_url: str | None = Field(
        None, description="PostgreSQL URL (else $ARGILLA_DATABASE_URL, else SQLite in the home folder)")
    venv: str | None = Field(None, description="the argilla-server venv (default $RLHF_ARGILLA_VENV or .venv-argilla)")
    start_timeout_s: float = Field(120.0, gt=0, description="how long start waits for the service to be healthy")

    @field_validator("host")
    @classmethod
    def _known_host(cls, value: str) -> str:
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"host '{value}' is not an IP address; use 127.0.0.1 (or 0.0.0.0 with "
                                 "allow_remote: true)") from None
        return value

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> ServiceConfig:
        if self.host not in LOOPBACK_HOSTS and not self.allow_remote:
            raise ValueError(f"host {self.host} exposes the annotation server beyond this machine; "
                             "set service.allow_remote=true to mean it")
        return self

    def home_path(self) -> Path:
        return Path(self.home).expanduser().resolve() if self.home else default_home().resolve()


class ArgillaConfig(StrictModel):
    """The Argilla instance the labeling commands use (empty: the embedded service)."""

    api_url: str | None = Field(None, description="URL of an external Argilla (else $ARGILLA_API_URL, else embedded)")
    api_key_env: str = Field("ARGILLA_API_KEY", min_length=1,
                             description="environment variable holding the API key of the external Argilla")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one request")
    retries: int = Field(4, ge=0, le=20, description="retries of a request that failed on the network or with 502-504")


class LabelingConfig(StrictModel):
    """``rlhf label`` configuration."""

    stage: str = Field("label", description="always 'label'")
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    argilla: ArgillaConfig = Field(default_factory=ArgillaConfig)
