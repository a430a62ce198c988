"""The real Argilla UI in headless Chromium: an annotator logs in, opens a ranking dataset from the home page,
ranks four responses with the keyboard only (a tie included), submits with Enter; the stored response holds
exactly those ranks (read from the raw API, sorted by rank), and the Submitted tab shows them again when the
record is reloaded. Screenshots are kept in ``test-artifacts/labeling/`` for people to look at."""

from __future__ import annotations

import shutil
import time

import pytest

from rlhf.labeling import create_dataset, create_user, iter_records, load_template, log_records, ranking_of

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
# (card focused when the key is pressed, key): after each key the UI moves the focus to the next card
KEYS = [("response_1", "2"), ("response_2", "3"), ("response_3", "1"), ("response_4", "2")]
EXPECTED = [["response_3"], ["response_1", "response_4"], ["response_2"]]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run 'apt-get install -y chromium' (or 'make system-deps')",
                    pytrace=False)
    return path


def test_annotator_ranks_by_keyboard_and_the_ranks_are_stored(labeling_service, artifacts_dir, tmp_path):
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run 'pip install -e .[dev]' (the browser is Debian's chromium; "
                    "never 'playwright install')", pytrace=False)
    live = labeling_service
    owner = live.http()
    dataset_id = create_dataset(owner, load_template("ranking-v1"), "browser-ranking", "browser")
    log_records(owner, dataset_id, [{"external_id": "q1", "fields": {
        "prompt": "What is 2 + 2?", "response_1": "It is 4.", "response_2": "Five.",
        "response_3": "2 + 2 = 4, because adding two and two gives four.", "response_4": "Four."}}])
    annotator = create_user(owner, "browser-annotator", workspaces=("browser",))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS[1:])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{live.url}/sign-in")
        page.fill("input[name=username], input[type=text]", annotator.user.username)
        page.fill("input[type=password]", annotator.password)
        page.keyboard.press("Enter")
        page.wait_for_url(f"{live.url}/")
        page.get_by_text("browser-ranking").first.click()  # the dataset list on the home page
        page.wait_for_url(f"**/dataset/{dataset_id}/annotation-mode**")
        page.wait_for_selector("#response_1")
        page.screenshot(path=str(artifacts_dir / "browser-1-opened.png"))

        page.focus("#response_1")
        for card, key in KEYS:  # the UI moves the focus itself; wait for it before the next key
            page.wait_for_function(f"document.activeElement && document.activeElement.id === '{card}'",
                                   timeout=15000)
            page.keyboard.press(key)
        slots = page.eval_on_selector_all(".draggable__slot", "els => els.map(e => e.innerText.split('\\n'))")
        shown = [sorted(s.strip() for s in slot[1:] if s.strip()) for slot in slots]
        assert shown[:3] == [["Response 3"], ["Response 1", "Response 4"], ["Response 2"]] and shown[3] == []
        page.keyboard.press("Enter")  # submit

        deadline = time.monotonic() + 30
        while True:
            records = list(iter_records(owner, dataset_id))
            responses = [r for r in records[0]["responses"] if r["user_id"] == annotator.user.id]
            if responses and responses[0]["status"] == "submitted" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # reload the record from the server in the Submitted tab: the UI shows the ranks it stored
        page.goto(f"{live.url}/dataset/{dataset_id}/annotation-mode?page=1&status=submitted")
        page.wait_for_selector("#response_1")
        page.wait_for_function("document.querySelectorAll('.draggable__slot')[0].innerText.includes('Response 3')",
                               timeout=15000)
        reloaded = page.eval_on_selector_all(".draggable__slot", "els => els.map(e => e.innerText.split('\\n'))")
        assert [sorted(s.strip() for s in slot[1:] if s.strip()) for slot in reloaded] == shown
        page.screenshot(path=str(artifacts_dir / "browser-2-submitted.png"))
        browser.close()

    assert len(responses) == 1
    assert ranking_of(responses[0]["values"], "ranking") == EXPECTED
    ranks = {item["value"]: item["rank"] for item in responses[0]["values"]["ranking"]["value"]}
    assert ranks == {"response_3": 1, "response_1": 2, "response_4": 2, "response_2": 3}
