"""Fixtures of the labeling tests: ONE real local service for the session (no mock of Argilla anywhere).

``labeling_service`` starts the embedded service through the project's own code path (``start_service``:
server venv created if missing, Redis, migrations, owner, server and worker) in a temporary home on a free
port, and stops it at the end of the session. ``postgres_service`` does the same against a throwaway
PostgreSQL cluster. Contract tests take ``service``, parametrized over both backends.

Missing system packages make the tests fail, not skip, with the command that installs them: CI installs them
(``make system-deps``), and a silently skipped contract test would hide a broken service.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rlhf.labeling import (
    ArgillaHTTP,
    NewUser,
    ServiceConfig,
    create_user,
    start_service,
    stop_service,
)
from rlhf.labeling.credentials import load_or_create_secrets
from rlhf.labeling.state import ServiceLayout

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "labeling"


def demo_replies(n: int, seed: int, k: int = 4) -> list[tuple[Any, list[str]]]:
    """``n`` demo prompts, each with ``k`` distinct replies of random quality (seeded), for candidate files."""
    from rlhf.world.demo import ResponseQuality, generate_prompts, generate_response

    rng = random.Random(seed)
    out = []
    for prompt in generate_prompts(n, seed):
        texts: list[str] = []
        while len(texts) < k:
            text = generate_response(prompt, ResponseQuality.draw(rng, 0.5), rng)
            if text not in texts:
                texts.append(text)
        out.append((prompt, texts))
    return out


def require_binary(name: str, package: str) -> str:
    """The path of ``name``; fails the test (no skip) with the install command when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run 'apt-get install -y {package}' (or 'make system-deps')",
                    pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveService:
    """A running service: where it is and how to talk to it."""

    backend: str
    config: ServiceConfig
    url: str
    owner_key: str
    secrets: tuple[str, ...]
    _clients: list[ArgillaHTTP] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.config.home_path()

    def http(self, api_key: str | None = None) -> ArgillaHTTP:
        client = ArgillaHTTP(self.url, api_key or self.owner_key, timeout_s=60.0)
        self._clients.append(client)
        return client

    def sdk(self) -> Any:
        import argilla as rg

        return rg.Argilla(api_url=self.url, api_key=self.owner_key, timeout=60)

    def new_user(self, prefix: str, workspace: str, role: str = "annotator") -> NewUser:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        return create_user(self.http(), name, role=role, workspaces=(workspace,))

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _start(backend: str, home: Path, database_url: str | None = None) -> LiveService:
    require_binary("redis-server", "redis-server")
    config = ServiceConfig(home=str(home), port=free_port(), database_url=database_url, start_timeout_s=180)
    status = start_service(config)
    assert status.running, status.describe()
    secrets = load_or_create_secrets(ServiceLayout(config.home_path()).secrets)
    return LiveService(backend, config, str(status.url), secrets.owner_api_key, secrets.values())


@pytest.fixture(scope="session")
def labeling_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The embedded service on SQLite, started once for the session."""
    live = _start("sqlite", tmp_path_factory.mktemp("labeling"))
    yield live
    live.close()
    stop_service(live.config)


# ------------------------------------------------------------------------------------------- PostgreSQL
def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed: run 'apt-get install -y postgresql'", pytrace=False)
    return found


@dataclass
class PostgresCluster:
    root: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://argilla:argilla-test-pw@127.0.0.1:{self.port}/argilla"

    def run(self, *cmd: str) -> None:
        subprocess.run([*self.as_user, *cmd], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (run as user 'postgres' when the tests run as root)."""
    initdb, pg_ctl, psql = _pg_bin("initdb"), _pg_bin("pg_ctl"), _pg_bin("psql")
    root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = PostgresCluster(root, free_port(), as_user)
    data = root / "data"
    cluster.run(initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256")
    cluster.run(pg_ctl, "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-o",
                f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        for sql in ("CREATE ROLE argilla LOGIN PASSWORD 'argilla-test-pw'", "CREATE DATABASE argilla OWNER argilla"):
            cluster.run(psql, "-h", str(root), "-p", str(cluster.port), "-U", "postgres", "-c", sql)
        yield cluster
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_service(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster) -> Iterator[LiveService]:
    """The embedded service with ARGILLA_DATABASE_URL on the throwaway PostgreSQL."""
    live = _start("postgres", tmp_path_factory.mktemp("labeling-pg"), postgres_cluster.url)
    yield live
    live.close()
    stop_service(live.config)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest) -> LiveService:
    """The service on each database backend (contract tests run against both)."""
    name = "labeling_service" if request.param == "sqlite" else "postgres_service"
    return request.getfixturevalue(name)


@pytest.fixture()
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    return free_port()


@pytest.fixture()
def artifacts_dir() -> Path:
    """``test-artifacts/labeling`` (git-ignored), kept after the run for people to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


# ------------------------------------------------------------------------------------------- contract data
@dataclass
class ContractData:
    """A dataset whose every record, response and suggestion is known, for the search-engine contract."""

    live: LiveService
    dataset_id: str
    workspace: str
    ids: dict[str, str]  # external id -> record id
    annotator_a: NewUser
    annotator_b: NewUser
    second_batch_at: str  # inserted_at of r5, the first record of the second batch

    def ext(self, record_ids: list[str]) -> list[str]:
        back = {v: k for k, v in self.ids.items()}
        return [back[r] for r in record_ids]


CONTRACT_RECORDS: list[dict[str, Any]] = [
    # external_id, prompt, answer, conversation, metadata, label suggestion, quality suggestion
    {"ext": "r0", "prompt": "The capital of France is Paris", "answer": "Paris is lovely in spring",
     "conversation": [{"role": "user", "content": "hello there"}],
     "metadata": {"topic": ["geo", "travel"], "length": 10, "temp": 0.1}, "label": ("good", 0.9, "gpt", "model"), "quality": 5},
    {"ext": "r1", "prompt": "The capital of Germany is Berlin", "answer": "Berlin has many museums",
     "metadata": {"topic": "geo", "length": 20, "temp": 0.5}, "label": ("bad", 0.4, "gpt", "model"), "quality": 2},
    {"ext": "r2", "prompt": "Paris Hilton is a celebrity known from television shows and several films of the era",
     "answer": "This is not about any city at all, it is a long answer about entertainment and fame",
     "metadata": {"topic": "people", "length": 30, "temp": 0.9}, "label": ("good", 0.7, "annotator-x", "human")},
    {"ext": "r3", "prompt": "What is the capital of Italy?", "answer": "Rome, of course",
     "metadata": {"topic": "geo", "length": 40, "temp": 0.3}, "label": ("ugly", 0.2, "gpt", "model"), "quality": 3},
    {"ext": "r4", "prompt": "Capitalism and markets", "answer": "economics words",
     "metadata": {"topic": "economy", "length": 50, "temp": 1.5}, "quality": 4},
    {"ext": "r5", "prompt": "Tell me a joke", "answer": "Why did the chicken cross the road",
     "conversation": [{"role": "user", "content": "a secret chat message"}, {"role": "assistant", "content": "ok"}],
     "metadata": {"topic": "humor", "length": 60, "temp": 2.5}, "label": ("bad", 0.95, "other", "model")},
    {"ext": "r6", "prompt": "Summarize this report", "answer": "The report says sales grew",
     "metadata": {"topic": "work", "length": 70, "temp": 0.0}},
    {"ext": "r7", "prompt": "Translate hello to Spanish", "answer": "Hola",
     "metadata": {"topic": "language", "length": 80, "temp": 0.7}},
    {"ext": "r8", "prompt": "Write a poem about the sea", "answer": "The sea is wide and deep",
     "metadata": {"topic": ["humor", "language"], "length": 90, "temp": 1.0}},
    {"ext": "r9", "prompt": "Untitled", "answer": "No metadata here", "picture": "https://example.com/zebrastripes.png"},
]
ANGLES_DEG = [0, 20, 40, 60, 80, 100, 120, 140, 160, 180]  # embedding of r_i: (cos, sin, 0) of its angle


def _contract_records(question_ids: dict[str, str]) -> list[dict[str, Any]]:
    import math

    out = []
    for spec, angle in zip(CONTRACT_RECORDS, ANGLES_DEG):
        fields: dict[str, Any] = {"prompt": spec["prompt"], "answer": spec["answer"]}
        if "conversation" in spec:
            fields["conversation"] = spec["conversation"]
        if "picture" in spec:
            fields["picture"] = spec["picture"]
        suggestions = []
        if "label" in spec:
            value, score, agent, kind = spec["label"]
            suggestions.append({"question_id": question_ids["label"], "value": value, "score": score,
                                "agent": agent, "type": kind})
        if "quality" in spec:
            suggestions.append({"question_id": question_ids["quality"], "value": spec["quality"]})
        rad = math.radians(angle)
        record = {"external_id": spec["ext"], "fields": fields, "suggestions": suggestions,
                  "vectors": {"emb": [round(math.cos(rad), 12), round(math.sin(rad), 12), 0.0]}}
        if "metadata" in spec:
            record["metadata"] = spec["metadata"]
        out.append(record)
    return out


def build_contract_dataset(live: LiveService) -> ContractData:
    """Create the contract dataset: 10 records in two batches, suggestions, vectors, two annotators' responses."""
    from rlhf.labeling import ensure_workspace, log_records, question_ids, submit_response

    http = live.http()
    workspace = f"contract-{uuid.uuid4().hex[:6]}"
    ws = ensure_workspace(http, workspace)
    ds = http.post("/api/v1/datasets", json={"name": "contract", "workspace_id": ws.id,
                                             "distribution": {"strategy": "overlap", "min_submitted": 1}})
    did = ds["id"]
    for name, settings, required in (("prompt", {"type": "text"}, True), ("answer", {"type": "text"}, True),
                                     ("conversation", {"type": "chat", "use_markdown": False}, False),
                                     ("picture", {"type": "image"}, False)):
        http.post(f"/api/v1/datasets/{did}/fields", json={"name": name, "title": name, "required": required,
                                                          "settings": settings})
    questions = [
        ("quality", True, {"type": "rating", "options": [{"value": v} for v in range(1, 6)]}),
        ("label", False, {"type": "label_selection", "options": [{"value": v, "text": v} for v in ("good", "bad", "ugly")]}),
        ("tags", False, {"type": "multi_label_selection", "options": [{"value": v, "text": v} for v in "abc"]}),
        ("rank", False, {"type": "ranking", "options": [{"value": v, "text": v} for v in "xyz"]}),
        ("note", False, {"type": "text"}),
    ]
    for name, required, settings in questions:
        http.post(f"/api/v1/datasets/{did}/questions", json={"name": name, "title": name, "required": required,
                                                             "settings": settings})
    for name, kind in (("topic", "terms"), ("length", "integer"), ("temp", "float")):
        http.post(f"/api/v1/datasets/{did}/metadata-properties",
                  json={"name": name, "title": name, "settings": {"type": kind}, "visible_for_annotators": True})
    http.post(f"/api/v1/datasets/{did}/vectors-settings", json={"name": "emb", "title": "emb", "dimensions": 3})
    http.put(f"/api/v1/datasets/{did}/publish")

    records = _contract_records(question_ids(http, did))
    first = log_records(http, did, records[:5])
    time.sleep(0.05)  # the second batch is strictly later (inserted_at range filter)
    second = log_records(http, did, records[5:])
    ids = {spec["ext"]: rid for spec, rid in zip(CONTRACT_RECORDS, first + second)}
    listed = http.get(f"/api/v1/datasets/{did}/records", params={"limit": 100})["items"]
    second_batch_at = next(r["inserted_at"] for r in listed if r["id"] == ids["r5"])

    a = live.new_user("ann-a", workspace)
    b = live.new_user("ann-b", workspace)
    http_a, http_b = live.http(a.api_key), live.http(b.api_key)
    answers = [
        (http_a, "r0", "submitted", {"quality": 5, "label": "good", "tags": ["a", "b"]}),
        (http_a, "r1", "draft", {"quality": 2}),
        (http_a, "r2", "discarded", {}),
        (http_a, "r3", "submitted", {"quality": 3, "label": "bad", "tags": ["c"]}),
        (http_b, "r0", "submitted", {"quality": 1, "label": "bad"}),
        (http_b, "r4", "submitted", {"quality": 4, "tags": ["a"]}),
        (http_b, "r5", "draft", {"quality": 5}),
    ]
    for client, ext, status, values in answers:
        submit_response(client, ids[ext], {k: {"value": v} for k, v in values.items()}, status)
    return ContractData(live, did, workspace, ids, a, b, second_batch_at)


@pytest.fixture(scope="session")
def contract(service: LiveService) -> ContractData:
    """The contract dataset on the service of the current backend (built once per backend)."""
    return build_contract_dataset(service)
