"""Unit tests of the labeling package that need no running service: config, secrets, templates, HTTP retries,
connection resolution, state files, the server-venv stamp, the ranking helpers, and the search engine's
per-user order on SQLite (plain SQL, run here on the standard library's sqlite3)."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import stat
import statistics
import sys
from pathlib import Path

import httpx
import pytest

from rlhf.core.config import ConfigError
from rlhf.core.errors import UserError
from rlhf.labeling import (
    ArgillaAPIError,
    ArgillaConfig,
    ArgillaHTTP,
    LabelingConfig,
    ServiceConfig,
    load_template,
    ranking_of,
    ranking_value,
    resolve_connection,
)
from rlhf.labeling.credentials import ENV_NAMES, load_or_create_secrets
from rlhf.labeling.http import is_loopback
from rlhf.labeling.server_venv import STAMP, _wanted_stamp, ensure_server_venv, requirements_file
from rlhf.labeling.state import ServiceLayout, ServiceState, pid_alive, read_state, write_state
from rlhf.labeling.templates import DatasetTemplate, templates_dir
from rlhf.stages import load_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "argilla_server_plugin"))

from argilla_sqlsearch import userorder


# ------------------------------------------------------------------------------------------- config
def test_config_defaults_are_loopback():
    config = LabelingConfig()
    assert (config.service.host, config.service.port, config.service.workspace) == ("127.0.0.1", 6900, "rlhf")
    assert config.argilla.api_url is None


def test_config_rejects_exposure_unless_allowed(tmp_path):
    path = tmp_path / "label.yaml"
    path.write_text("stage: label\nservice:\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError, match="allow_remote"):
        load_config(path, expect_stage="label")
    config = load_config(path, ["service.allow_remote=true"], expect_stage="label")
    assert isinstance(config, LabelingConfig) and config.service.host == "0.0.0.0"


def test_config_rejects_unknown_keys_and_bad_hosts(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'port'"):
        load_config(None, ["service.prot=1"], expect_stage="label")
    with pytest.raises(ConfigError, match="not an IP address"):
        load_config(None, ["service.host=example.com"], expect_stage="label")


# ------------------------------------------------------------------------------------------- secrets
def test_secrets_generated_once_with_mode_600(tmp_path):
    path = tmp_path / "home" / "secrets.json"
    first = load_or_create_secrets(path, environ={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secrets(path, environ={}) == first
    assert len(set(first.values())) == 3 and all(len(v) >= 16 for v in first.values())
    assert "hidden" in repr(first) and first.owner_password not in repr(first)


def test_secrets_from_environment_win_and_are_not_written(tmp_path):
    path = tmp_path / "secrets.json"
    env = {ENV_NAMES["owner_password"]: "from-the-env-123", ENV_NAMES["owner_api_key"]: "env.key",
           ENV_NAMES["auth_secret_key"]: "env-jwt"}
    secrets = load_or_create_secrets(path, environ=env)
    assert secrets.values() == ("from-the-env-123", "env.key", "env-jwt")
    assert not path.exists()  # every secret came from the environment: nothing to store
    partial = load_or_create_secrets(path, environ={ENV_NAMES["owner_password"]: "only-password-1"})
    assert partial.owner_password == "only-password-1"
    assert "only-password-1" not in path.read_text()


def test_secrets_refuse_loose_permissions_and_short_passwords(tmp_path):
    path = tmp_path / "secrets.json"
    load_or_create_secrets(path, environ={})
    os.chmod(path, 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        load_or_create_secrets(path, environ={})
    os.chmod(path, 0o600)
    with pytest.raises(UserError, match="shorter than 8"):
        load_or_create_secrets(path, environ={ENV_NAMES["owner_password"]: "short"})


# ------------------------------------------------------------------------------------------- templates
def test_every_shipped_template_loads_with_its_guidelines():
    paths = sorted(templates_dir().rglob("*.yaml"))
    assert paths, f"no template found in {templates_dir()}"
    for path in paths:
        template = load_template(path)
        assert template.guidelines_text().startswith("#")
        assert any(q.type == "ranking" for q in template.questions)
        assert all(not f.use_markdown for f in template.fields)  # model output is shown as text


def test_ranking_template_options_are_its_response_fields():
    template = load_template("ranking-v1")
    ranking = next(q for q in template.questions if q.name == "ranking")
    assert [o.value for o in ranking.options] == [f.name for f in template.fields if f.name.startswith("response_")]


def test_template_validation_names_the_problem():
    base = load_template("ranking-v1").model_dump()
    bad = dict(base, fields=base["fields"] + [base["fields"][0]])
    with pytest.raises(ValueError, match="field names repeat: prompt"):
        DatasetTemplate.model_validate(bad)
    one_option = json.loads(json.dumps(base))
    one_option["questions"][0]["options"] = one_option["questions"][0]["options"][:1]
    with pytest.raises(ValueError, match="at least 2 options"):
        DatasetTemplate.model_validate(one_option)
    with pytest.raises(UserError, match="known templates: ranking-v1"):
        load_template("nope")


# ------------------------------------------------------------------------------------------- ranking helpers
def test_ranking_round_trip_with_ties():
    value = ranking_value(["b", ["a", "d"], "c"])
    assert value == [{"value": "b", "rank": 1}, {"value": "a", "rank": 2}, {"value": "d", "rank": 2},
                     {"value": "c", "rank": 3}]
    stored_in_option_order = sorted(value, key=lambda item: item["value"])  # how the UI stores it
    assert ranking_of({"ranking": {"value": stored_in_option_order}}, "ranking") == [["b"], ["a", "d"], ["c"]]
    assert ranking_of({}, "ranking") == []


# ------------------------------------------------------------------------------------------- HTTP client
def _client(handler, retries=3) -> ArgillaHTTP:
    client = ArgillaHTTP("http://argilla.test", "key", retries=retries, transport=httpx.MockTransport(handler))
    return client


def test_http_retries_connection_errors_and_gateway_errors(monkeypatch):
    monkeypatch.setattr("rlhf.labeling.http.time.sleep", lambda _s: None)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        assert request.headers["X-Argilla-Api-Key"] == "key"
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(calls) == 2:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"ok": True})

    assert _client(handler).get("/api/v1/me") == {"ok": True}
    assert calls == ["GET", "GET", "GET"]


def test_bulk_responses_that_met_a_locked_database_are_sent_again(monkeypatch):
    from rlhf.labeling.responses import submit_responses

    monkeypatch.setattr("rlhf.labeling.responses.time.sleep", lambda _s: None)
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ids = [item["record_id"] for item in json.loads(request.content)["items"]]
        sent.append(ids)
        locked = "(sqlite3.OperationalError) database is locked"
        # The server answers item by item with HTTP 200; record b meets a locked database the first time.
        return httpx.Response(200, json={"items": [
            {"item": None, "error": locked} if rid == "b" and len(sent) == 1 else {"item": {}, "error": None}
            for rid in ids]})

    items = [(rid, {"ranking": [{"value": "a", "rank": 1}]}, "submitted") for rid in ("a", "b", "c")]
    assert submit_responses(_client(handler), items) == 3
    assert sent == [["a", "b", "c"], ["b"]]

    def refusing(request: httpx.Request) -> httpx.Response:
        ids = [item["record_id"] for item in json.loads(request.content)["items"]]
        return httpx.Response(200, json={"items": [{"item": None, "error": "record not found"} for _ in ids]})

    with pytest.raises(UserError, match="Argilla refused 3 of 3 responses: record not found"):
        submit_responses(_client(refusing), items)


def test_http_does_not_repeat_a_post_that_may_have_taken_effect(monkeypatch):
    monkeypatch.setattr("rlhf.labeling.http.time.sleep", lambda _s: None)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(503, json={"detail": "busy"})

    with pytest.raises(ArgillaAPIError) as err:
        _client(handler).post("/api/v1/records/x/responses", json={})
    assert calls == ["POST"] and err.value.status == 503
    calls.clear()
    with pytest.raises(ArgillaAPIError):
        _client(handler, retries=2).post("/api/v1/me/responses/bulk", json={}, idempotent=True)
    assert calls == ["POST"] * 3


def test_http_errors_are_one_line_with_status_and_detail():
    client = _client(lambda request: httpx.Response(422, json={"detail": "Dataset cannot be published\nat all"}))
    with pytest.raises(ArgillaAPIError) as err:
        client.put("/api/v1/datasets/1/publish")
    assert err.value.status == 422 and "HTTP 422" in str(err.value)
    assert isinstance(err.value, UserError)


def test_http_gives_up_with_a_hint_when_unreachable(monkeypatch):
    monkeypatch.setattr("rlhf.labeling.http.time.sleep", lambda _s: None)

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UserError, match="rlhf label serve status"):
        _client(handler, retries=1).get("/api/v1/me")


# ------------------------------------------------------------------------------------------- connection
def test_external_argilla_from_environment_or_config(tmp_path):
    env = {"ARGILLA_API_URL": "https://argilla.example/", "ARGILLA_API_KEY": "k1"}
    conn = resolve_connection(ArgillaConfig(), ServiceConfig(home=str(tmp_path)), env)
    assert (conn.api_url, conn.api_key, conn.source) == ("https://argilla.example", "k1", "environment")
    assert "k1" not in repr(conn)
    conn = resolve_connection(ArgillaConfig(api_url="http://a:1", api_key_env="TEAM_KEY"), ServiceConfig(),
                              {"TEAM_KEY": "k2"})
    assert (conn.api_url, conn.api_key, conn.source) == ("http://a:1", "k2", "config")
    with pytest.raises(UserError, match="TEAM_KEY is not set"):
        resolve_connection(ArgillaConfig(api_url="http://a:1", api_key_env="TEAM_KEY"), ServiceConfig(), {})


def test_embedded_service_must_be_running(tmp_path):
    with pytest.raises(UserError, match="rlhf label serve start"):
        resolve_connection(ArgillaConfig(), ServiceConfig(home=str(tmp_path)), {})
    layout = ServiceLayout(tmp_path)
    write_state(layout.state, ServiceState("running", "http://127.0.0.1:1", str(tmp_path), os.getpid()))
    conn = resolve_connection(ArgillaConfig(), ServiceConfig(home=str(tmp_path)), {})
    assert conn.source == "embedded service" and conn.api_url == "http://127.0.0.1:1"
    assert conn.api_key == load_or_create_secrets(layout.secrets, {}).owner_api_key


# ------------------------------------------------------------------------------------------- state, venv stamp
def test_state_round_trip_and_pid_checks(tmp_path):
    layout = ServiceLayout(tmp_path)
    assert read_state(layout.state) is None
    state = ServiceState("running", "http://127.0.0.1:5", "run", 123, {"server": 456})
    write_state(layout.state, state)
    back = read_state(layout.state)
    assert back is not None and (back.status, back.pids) == ("running", {"server": 456})
    assert pid_alive(os.getpid()) and not pid_alive(0)


def test_run_folders_are_pruned(tmp_path):
    layout = ServiceLayout(tmp_path)
    for i in range(12):
        (layout.runs / f"2020010{i:02d}-000000-1").mkdir(parents=True)
    run = layout.new_run_dir()
    kept = sorted(p.name for p in layout.runs.iterdir())
    assert len(kept) == 10 and run.name in kept and "202001000-000000-1" not in kept


def test_server_venv_with_current_stamp_is_reused_without_pip(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / STAMP).write_text(_wanted_stamp(requirements_file(), sys.executable) + "\n")
    assert ensure_server_venv(venv) == venv / "bin" / "python"  # returns without building anything


def test_server_pins_are_complete():
    pins = [line for line in requirements_file().read_text().splitlines() if line and not line.startswith("#")]
    names = {line.split("==")[0].lower() for line in pins}
    assert all("==" in line for line in pins)
    assert {"argilla-server", "click", "huggingface-hub", "datasets", "psycopg2-binary", "asyncpg"} <= {
        n.replace("_", "-") for n in names}
    assert "argilla-server==2.8.0" in pins and "click==8.1.8" in pins


# ------------------------------------------------------------------------------------------- HTTP encoding
def test_loopback_urls_ask_for_uncompressed_answers():
    assert is_loopback("http://127.0.0.1:6900") and is_loopback("http://localhost:6900/")
    assert is_loopback("http://[::1]:6900") and is_loopback("http://127.0.0.2")
    assert not is_loopback("https://argilla.example.org") and not is_loopback("http://10.0.0.5:6900")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("accept-encoding", ""))
        return httpx.Response(200, json={})

    for url in ("http://127.0.0.1:6900", "https://argilla.example.org"):
        with ArgillaHTTP(url, "key", transport=httpx.MockTransport(handler)) as http:
            http.get("/api/v1/me")
    assert seen[0] == "identity" and "gzip" in seen[1]


# ------------------------------------------------------------------------------------------- per-user order
def _orders(n: int, users: list[str], first_rowid: int = 1) -> dict[str, list[int]]:
    """Each user's order of ``n`` rows (rowids from ``first_rowid``), by the engine's SQLite expression."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE records (id TEXT)")
    db.executemany("INSERT INTO records (rowid, id) VALUES (?, ?)",
                   [(first_rowid + i, f"r{i}") for i in range(n)])
    orders = {}
    for user in users:
        key = userorder.user_rank_sql("records.rowid", user)
        kinds = {kind for (kind,) in db.execute(f"SELECT DISTINCT typeof({key}) FROM records")}
        assert kinds == {"integer"}  # no overflow into floating point
        orders[user] = [rowid for (rowid,) in db.execute(f"SELECT rowid FROM records ORDER BY {key}, rowid")]
    return orders


def _rank_correlation(a: list[int], b: list[int]) -> float:
    position = {item: i for i, item in enumerate(b)}
    return statistics.correlation(list(range(len(a))), [position[item] for item in a])


def test_user_order_is_stable_and_unrelated_between_users():
    users = [f"00000000-0000-4000-8000-{i:012d}" for i in range(12)]
    orders = _orders(5000, users)
    assert _orders(5000, users[:1])[users[0]] == orders[users[0]]  # the same order every time
    insertion = list(range(1, 5001))
    for order in orders.values():
        assert sorted(order) == insertion
        assert abs(_rank_correlation(order, insertion)) < 0.1  # not the insertion order
        steps = {b - a for a, b in itertools.pairwise(order)}
        assert len(steps) > 1000  # no lattice: an affine hash alone gives 3 distinct steps
    overlaps, correlations = [], []
    for first, second in zip(users[::2], users[1::2]):
        overlaps.append(len(set(orders[first][:50]) & set(orders[second][:50])))
        correlations.append(abs(_rank_correlation(orders[first], orders[second])))
    assert statistics.mean(overlaps) <= 3 and max(overlaps) <= 8  # random pages of 50 in 5,000 share 0.5
    assert max(correlations) < 0.1


def test_user_order_stays_integer_for_huge_rowids():
    order = _orders(100, ["some-user"], first_rowid=2**62)["some-user"]
    assert sorted(order) == [2**62 + i for i in range(100)]


def test_user_order_constants_and_seeds():
    a, b, c = userorder.user_rank_constants("u")
    assert 1 <= a < userorder.PRIME and 0 <= b < userorder.PRIME and 1 <= c < 2**20
    assert userorder.user_rank_constants("u") == (a, b, c) != userorder.user_rank_constants("v")
    seeds = {userorder.user_rank_seed(f"user-{i}") for i in range(100)}
    assert len(seeds) == 100 and all(-(2**63) <= seed < 2**63 for seed in seeds)
