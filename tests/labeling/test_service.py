"""``serve start|stop|status``: health, idempotent start, clear one-line failures, clean stop, secrets kept out
of logs; webhooks still fire through the server's webhook gate. Uses the session service, plus short-lived
services of its own for the failure and restart cases."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlhf.core.errors import UserError
from rlhf.labeling import ServiceConfig, service_status, start_service, stop_service
from rlhf.labeling.credentials import load_or_create_secrets
from rlhf.labeling.state import ServiceLayout, pid_alive, read_state

pytestmark = pytest.mark.slow


def test_session_service_is_healthy_on_loopback(labeling_service):
    status = service_status(labeling_service.config)
    assert status.running and status.url.startswith("http://127.0.0.1:")
    assert set(status.pids) == {"redis", "server", "worker"} and all(pid_alive(p) for p in status.pids.values())
    info = labeling_service.http().get("/api/v1/status")
    assert info["version"] == "2.8.0"
    assert info["search_engine"]["version"]["distribution"] == "sqlsearch"
    layout = ServiceLayout(labeling_service.home)
    assert stat.S_IMODE(layout.secrets.stat().st_mode) == 0o600
    assert (layout.redis_socket.exists() and stat.S_IMODE(layout.redis_socket.stat().st_mode) & 0o077 == 0)
    assert (status.run_dir / "server.log").is_file() and (status.run_dir / "worker.log").is_file()


def test_start_when_running_is_a_fast_no_op(labeling_service):
    before = service_status(labeling_service.config)
    again = start_service(labeling_service.config)
    assert again.running and again.pids == before.pids and again.run_dir == before.run_dir


def test_port_in_use_is_one_clear_line(tmp_path, labeling_service):
    taken = ServiceConfig(home=str(tmp_path), port=labeling_service.config.port)
    with pytest.raises(UserError) as err:
        start_service(taken)
    message = str(err.value)
    assert f"port {labeling_service.config.port} on 127.0.0.1 is already in use" in message
    assert "service.port=<port>" in message and "label.service.port=<port> in a pipeline" in message
    assert "\n" not in message


def test_missing_redis_names_the_package(tmp_path, monkeypatch, free_tcp_port):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="apt-get install -y redis-server"):
        start_service(ServiceConfig(home=str(tmp_path / "home"), port=free_tcp_port))


def test_part_that_cannot_start_is_named_and_everything_stops(tmp_path, free_tcp_port):
    unreachable = "postgresql://nobody:s3cret-pw@127.0.0.1:1/none"  # nothing listens on port 1
    config = ServiceConfig(home=str(tmp_path / "home"), port=free_tcp_port, database_url=unreachable,
                           start_timeout_s=120)
    with pytest.raises(UserError) as err:
        start_service(config)
    message = str(err.value)
    assert "failed to start: server exited during start-up" in message and "\n" not in message
    assert "s3cret-pw" not in message  # the database password is not echoed
    state = read_state(ServiceLayout(config.home_path()).state)
    assert state is not None and state.status == "failed"
    assert not pid_alive(state.supervisor_pid)
    assert not any(pid_alive(pid) for pid in state.pids.values())


def test_stop_then_start_keeps_data_and_logs_hold_no_secret(tmp_path, free_tcp_port):
    config = ServiceConfig(home=str(tmp_path / "home"), port=free_tcp_port, start_timeout_s=180)
    first = start_service(config)
    assert first.running
    from rlhf.labeling import ArgillaHTTP, create_user

    secrets = load_or_create_secrets(ServiceLayout(config.home_path()).secrets)
    with ArgillaHTTP(first.url, secrets.owner_api_key) as http:
        created = create_user(http, "persisted", workspaces=("rlhf",))
    pids = dict(first.pids)
    stopped = stop_service(config)
    assert stopped.status == "stopped" and stopped.pids == {}
    assert not any(pid_alive(pid) for pid in pids.values())
    assert not (first.run_dir / "tmp").exists()  # the server's TMPDIR (static copies) is cleaned up

    second = start_service(config)
    try:
        assert second.running and second.run_dir != first.run_dir
        with ArgillaHTTP(second.url, secrets.owner_api_key) as http:
            assert "persisted" in [u["username"] for u in http.get("/api/v1/users")["items"]]
    finally:
        stop_service(config)
    secret_values = [*secrets.values(), created.password, created.api_key]
    for log in Path(config.home_path(), "runs").rglob("*"):
        if log.is_file():
            text = log.read_text(errors="replace")
            assert not any(value in text for value in secret_values), f"a secret leaked into {log}"
    assert os.stat(ServiceLayout(config.home_path()).state).st_size > 0



def _webhook_receiver(port: int) -> tuple[ThreadingHTTPServer, list[dict]]:
    """A local HTTP server that collects the JSON bodies POSTed to it (webhook deliveries)."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers.get("content-length", "0")))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def test_webhooks_fire_for_subscribed_events_only(labeling_service, free_tcp_port):
    """The server builds webhook events only when an enabled webhook wants them (argilla_server_plugin/
    webhook_gate.py): with one subscribed to record.created and response.created, both arrive with their data;
    record.completed, not subscribed, does not; once the webhook is deleted, nothing more arrives."""
    from rlhf.labeling import create_dataset, load_template, log_records, ranking_value, submit_response

    slots = ["response_1", "response_2", "response_3", "response_4"]

    def rows(*names: str) -> list[dict]:
        return [{"external_id": name, "fields": {"prompt": name, **{slot: f"{slot} {name}" for slot in slots}}}
                for name in names]

    def types() -> list[str]:
        return sorted({event["type"] for event in received})

    server, received = _webhook_receiver(free_tcp_port)
    owner = labeling_service.http()
    hook = owner.post("/api/v1/webhooks", json={"url": f"http://127.0.0.1:{free_tcp_port}/hook",
                                                "events": ["record.created", "response.created"]})
    try:
        dataset = create_dataset(owner, load_template("ranking-v1"), "webhooks", "hooks", min_submitted=1)
        ids = log_records(owner, dataset, rows("w0", "w1", "w2"))
        annotator = labeling_service.new_user("hook", "hooks")
        submit_response(labeling_service.http(annotator.api_key), ids[0], {"ranking": {"value": ranking_value(slots)}})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(received) < 4:
            time.sleep(0.5)
        time.sleep(3)  # a record.completed (not subscribed) would have been delivered by now
        created = [event["data"] for event in received if event["type"] == "record.created"]
        answered = [event["data"] for event in received if event["type"] == "response.created"]
        assert sorted(data["external_id"] for data in created) == ["w0", "w1", "w2"]
        assert [data["record"]["id"] for data in answered] == [ids[0]]
        assert answered[0]["values"]["ranking"]["value"] == ranking_value(slots)
        assert types() == ["record.created", "response.created"]
    finally:
        owner.delete(f"/api/v1/webhooks/{hook['id']}")
    count = len(received)
    log_records(owner, dataset, rows("w-after"))
    time.sleep(3)
    server.shutdown()
    assert len(received) == count
