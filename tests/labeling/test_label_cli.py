"""``rlhf label serve status``, ``users add|list|remove`` and ``workspaces add|list|remove`` against the session
service, and the same commands against an "external" Argilla given by ARGILLA_API_URL/ARGILLA_API_KEY."""

from __future__ import annotations

import io
import json
import sys
import uuid

import httpx
import pytest

from rlhf.cli import build_parser
from rlhf.core.errors import USER_ERRORS

pytestmark = pytest.mark.slow


def label(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """Run ``rlhf label ARGV`` as the console script does: (exit code, stdout, stderr)."""
    args = build_parser().parse_args(["label", *argv])
    try:
        code = int(args.func(args) or 0)
    except USER_ERRORS as err:
        print(f"rlhf: error: {err}", file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def home_args(labeling_service) -> tuple[str, ...]:
    return (f"service.home={labeling_service.home}",)


def _field(out: str, name: str) -> str:
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith(f"{name}: "))


def test_serve_status(capsys, labeling_service, home_args):
    code, out, _ = label(capsys, "serve", "status", "--json", *home_args)
    status = json.loads(out)
    assert code == 0 and status["status"] == "running" and status["url"] == labeling_service.url


def test_users_add_gives_working_credentials(capsys, labeling_service, home_args):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    code, out, _ = label(capsys, "users", "add", name, *home_args)
    assert code == 0 and f"created annotator '{name}' in workspace(s) rlhf" in out
    password, api_key = _field(out, "password"), _field(out, "api key")
    me = labeling_service.http(api_key).get("/api/v1/me")
    assert (me["username"], me["role"]) == (name, "annotator")
    token = httpx.post(f"{labeling_service.url}/api/v1/token", data={"username": name, "password": password})
    assert token.status_code == 201 and token.json()["access_token"]  # the UI login works with it

    code, out, _ = label(capsys, "users", "list", "--json", *home_args)
    row = next(u for u in json.loads(out) if u["username"] == name)
    assert (row["role"], row["workspaces"]) == ("annotator", ["rlhf"])

    code, _, err = label(capsys, "users", "add", name, *home_args)
    assert code == 2 and "already exists" in err and err.count("\n") == 1

    code, _, err = label(capsys, "users", "remove", name, *home_args)
    assert code == 2 and "--yes" in err
    code, out, _ = label(capsys, "users", "remove", name, "--yes", *home_args)
    assert code == 0 and f"removed annotator '{name}'" in out
    _, out, _ = label(capsys, "users", "list", *home_args)
    assert name not in out


def test_users_add_with_chosen_password_and_workspace(capsys, monkeypatch, labeling_service, home_args):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr("sys.stdin", io.StringIO("chosen-password-42\n"))
    code, out, _ = label(capsys, "users", "add", name, "--password-stdin", "--workspace", "team-x",
                         "--role", "admin", *home_args)
    assert code == 0 and "password:" not in out and "chosen-password-42" not in out
    token = httpx.post(f"{labeling_service.url}/api/v1/token",
                       data={"username": name, "password": "chosen-password-42"})
    assert token.status_code == 201
    _, out, _ = label(capsys, "workspaces", "list", *home_args)
    assert "team-x" in out.split()


def test_workspaces_add_list_remove(capsys, labeling_service, home_args):
    name = f"ws-{uuid.uuid4().hex[:6]}"
    assert label(capsys, "workspaces", "add", name, *home_args)[0] == 0
    assert label(capsys, "workspaces", "add", name, *home_args)[0] == 0  # idempotent
    assert name in label(capsys, "workspaces", "list", *home_args)[1].split()
    http = labeling_service.http()
    ws_id = next(w["id"] for w in http.get("/api/v1/me/workspaces")["items"] if w["name"] == name)
    dataset = http.post("/api/v1/datasets", json={"name": "blocker", "workspace_id": ws_id})
    code, _, err = label(capsys, "workspaces", "remove", name, *home_args)
    assert code == 2 and "still holds datasets" in err
    http.delete(f"/api/v1/datasets/{dataset['id']}")
    assert label(capsys, "workspaces", "remove", name, *home_args)[0] == 0
    assert name not in label(capsys, "workspaces", "list", *home_args)[1].split()


def test_commands_work_against_an_external_argilla(capsys, monkeypatch, tmp_path, labeling_service):
    monkeypatch.setenv("ARGILLA_API_URL", labeling_service.url)
    monkeypatch.setenv("ARGILLA_API_KEY", labeling_service.owner_key)
    elsewhere = (f"service.home={tmp_path / 'no-service-here'}",)
    code, out, _ = label(capsys, "users", "list", *elsewhere)
    assert code == 0 and "owner" in out
    monkeypatch.delenv("ARGILLA_API_KEY")
    code, _, err = label(capsys, "users", "list", *elsewhere)
    assert code == 2 and "ARGILLA_API_KEY is not set" in err
    monkeypatch.delenv("ARGILLA_API_URL")
    code, _, err = label(capsys, "users", "list", *elsewhere)
    assert code == 2 and "is not running; start it with 'rlhf label serve start'" in err


def test_bad_override_is_reported(capsys, home_args):
    code, _, err = label(capsys, "users", "list", *home_args, "service.port")
    assert code == 2 and "'service.port' is not an override of the form key.path=value" in err
