"""The chat page (``GET /chat``) in headless Chromium against the real app served by uvicorn in process: the reply
streams in piece by piece and ends up equal to the stored one, 👎 and "Escalate to a human" store exactly those
two events, the whole conversation goes with every request, markup in messages shows as text and runs nothing,
and a wrong key shows the server's 401 line. The tiny SFT policy generates (greedy, so replies are repeatable);
its stream is paced so that the page visibly gets the reply in several pieces. A screenshot is kept in
``test-artifacts/serving/`` for people to look at."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.serving.conftest import CHAT

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
KEY = CHAT["Authorization"].removeprefix("Bearer ")
QUESTION = "How long does a refund take to arrive after I send the item back?"
PAYLOAD = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
WAIT_MS = 120_000  # a reply on a busy CI machine; expect() waits only 5 s unless told
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# Records every text the newest assistant message shows, to see the reply arrive in pieces.
WATCH = """() => {
  window.__seen = [];
  new MutationObserver(() => {
    const all = document.querySelectorAll('#log li.assistant .text');
    if (all.length) window.__seen.push(all[all.length - 1].textContent);
  }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
}"""


class _Paced:
    """The chat engine with a pause before each streamed piece, so that pieces reach the browser apart."""

    def __init__(self, engine, pause: float) -> None:
        self._engine, self._pause = engine, pause

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def stream(self, *args, **kwargs):
        for piece in self._engine.stream(*args, **kwargs):
            if isinstance(piece, str):
                time.sleep(self._pause)
            yield piece


def _need(what: str, ok: bool, hint: str) -> None:
    if not ok:
        message = f"{what} is not installed ({hint})"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need("playwright", sync_playwright is not None, "pip install -e .[dev]")
    _need("chromium", Path(CHROMIUM).exists(), "apt-get install -y chromium; never 'playwright install'")
    from rlhf.stages.report import CHROMIUM_FLAGS

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        yield chromium
        chromium.close()


@pytest.fixture
def live_chat(make_service):
    """The real app on a free port (uvicorn in a background thread): ``(service, base URL)``."""
    import uvicorn

    from rlhf.serving.api import build_api

    service = make_service(model={"temperature": 0.0, "max_tokens": 24})
    service.engine = _Paced(service.engine, 0.05)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_api(service), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield service, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def chat_page(browser, live_chat):
    """A fresh page on ``/chat`` that records requests, script errors and Content-Security-Policy violations;
    none of the latter two may happen."""
    service, url = live_chat
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.requests, page.problems = [], []
    page.on("request", lambda req: page.requests.append(req))
    page.on("pageerror", lambda err: page.problems.append(f"script error: {err}"))
    page.on("console", lambda msg: page.problems.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    response = page.goto(f"{url}/chat")
    assert response.status == 200 and "default-src 'self'" in response.headers["content-security-policy"]
    yield page, service
    context.close()
    assert page.problems == []


def _log_in(page, key: str = KEY, user: str = "demo-user") -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_label("User id").fill(user)


def _send(page, text: str) -> None:
    page.get_by_label("Your message").fill(text)
    page.get_by_role("button", name="Send").click()


def _chat_bodies(page) -> list[dict]:
    return [r.post_data_json for r in page.requests if r.url.endswith("/v1/chat/completions")]


def test_reply_streams_in_equals_the_stored_one_and_feedback_is_stored(chat_page, repo_root):
    from playwright.sync_api import expect

    page, service = chat_page
    _log_in(page)
    page.evaluate(WATCH)
    _send(page, QUESTION)
    reply = page.locator("#log li.assistant[data-reply-id]")
    expect(reply).to_have_count(1, timeout=WAIT_MS)

    (stored,) = service.store.replies()
    assert reply.get_attribute("data-reply-id") == stored["id"]
    shown = reply.locator(".text").text_content()
    assert shown == stored["reply"] and shown
    assert page.locator("#log li.user .text").text_content() == QUESTION
    # The page showed the reply growing as the stream arrived, not only once it was whole.
    seen = [s for s in dict.fromkeys(page.evaluate("window.__seen")) if s.strip()]
    partial = [s for s in seen if s.strip() != shown]
    assert len(partial) >= 2 and all(shown.startswith(s.strip()) for s in partial), seen
    (body,) = _chat_bodies(page)
    assert body == {"messages": [{"role": "user", "content": QUESTION}], "stream": True, "user": "demo-user"}

    reply.get_by_role("button", name="Thumbs down").click()
    expect(reply.locator(".feedback-status")).to_have_text("👎 sent", timeout=30_000)
    reply.get_by_role("button", name="Escalate to a human").click()
    expect(reply.locator(".feedback-status")).to_have_text("Escalate to a human sent", timeout=30_000)
    events = service.store.feedback()
    assert sorted((e["reply_id"], e["kind"], e["source"]) for e in events) == [
        (stored["id"], "escalate", "explicit"), (stored["id"], "thumbs_down", "explicit")]
    sent = [r.post_data_json for r in page.requests if r.url.endswith("/v1/feedback")]
    assert [{k: v for k, v in b.items() if k != "event_id"} for b in sent] == [
        {"reply_id": stored["id"], "rating": "down"}, {"reply_id": stored["id"], "escalate": True}]
    assert all(UUID.match(b["event_id"]) for b in sent) and sent[0]["event_id"] != sent[1]["event_id"]
    assert sorted(e["event_id"].split(":")[0] for e in events) == sorted(b["event_id"] for b in sent)
    # Feedback the server refuses shows its one line and stores nothing.
    page.get_by_label("API key").fill("not-a-real-key")
    reply.get_by_role("button", name="Thumbs up").click()
    expect(reply.locator(".feedback-status")).to_have_text("invalid API key", timeout=30_000)
    assert len(service.store.feedback()) == 2
    page.get_by_label("API key").fill(KEY)

    # The next turn carries the whole conversation, the reply as shown included.
    _send(page, "Thanks. Can I get the refund on a gift card instead?")
    expect(page.locator("#log li.assistant[data-reply-id]")).to_have_count(2, timeout=WAIT_MS)
    assert _chat_bodies(page)[-1]["messages"] == [
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": shown},
        {"role": "user", "content": "Thanks. Can I get the refund on a gift card instead?"}]
    artifacts = repo_root / "test-artifacts" / "serving"
    artifacts.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(artifacts / "chat-page.png"), full_page=True)

    # A new conversation empties the log and starts the messages afresh.
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#log li")).to_have_count(0)
    _send(page, QUESTION)
    expect(page.locator("#log li.assistant[data-reply-id]")).to_have_count(1, timeout=WAIT_MS)
    assert _chat_bodies(page)[-1]["messages"] == [{"role": "user", "content": QUESTION}]


def test_markup_in_a_message_is_shown_as_text_and_runs_nothing(chat_page):
    from playwright.sync_api import expect

    page, service = chat_page
    _log_in(page)
    _send(page, PAYLOAD)
    expect(page.locator("#log li.assistant[data-reply-id]")).to_have_count(1, timeout=WAIT_MS)
    assert page.locator("#log li.user .text").text_content() == PAYLOAD
    expect(page.locator("#log li.user").get_by_text(PAYLOAD, exact=True)).to_be_visible()
    assert page.locator("#log img, #log script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    (stored,) = service.store.replies()
    assert page.locator("#log li.assistant .text").text_content() == stored["reply"]
    paths = {urlsplit(r.url).path for r in page.requests}
    assert paths <= {"/chat", "/v1/chat/completions", "/favicon.ico"}, paths  # the page fetched no "x"


def test_a_wrong_key_shows_the_servers_401_message(chat_page):
    from playwright.sync_api import expect

    page, service = chat_page
    status = page.locator("#status")
    _send(page, QUESTION)  # no key yet: the page asks for one and sends nothing
    expect(status).to_have_text("Enter an API key first.")
    assert _chat_bodies(page) == []

    _log_in(page, key="not-a-real-key")
    _send(page, QUESTION)
    expect(status).to_have_text("invalid API key", timeout=30_000)  # the one line of the server's 401 body
    expect(status).to_have_class(re.compile(r"\berror\b"))
    assert len(_chat_bodies(page)) == 1 and service.store.replies() == []
    expect(page.locator("#log li")).to_have_count(0)
    expect(page.get_by_label("Your message")).to_have_value(QUESTION)  # given back to send again

    # The key lives in sessionStorage only: kept across a reload, never in localStorage.
    page.reload()
    expect(page.get_by_label("API key")).to_have_value("not-a-real-key")
    assert page.evaluate("localStorage.length") == 0
