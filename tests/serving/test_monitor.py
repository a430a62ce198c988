"""``rlhf monitor``: the window's figures (overall and per category) equal what was put in the store, alerts fire
exactly when a figure is above its threshold, RM drift against an eval baseline, the reward model scoring the
window's unscored replies, one-line errors naming the key to fix, and the report in headless Chromium showing a
stored ``<script>`` as text that runs nothing.

The store is filled directly through :class:`~rlhf.serving.store.FeedbackStore` (no model, no server):

=================  ======================  =============================================================
category           latencies (ms)          feedback and flags
=================  ======================  =============================================================
``returns``        100, 200, 300, 400      thumbs-down on the first (2 h old: abandoned), escalate on the
                                           second
``order_status``   500 ... 1000            thumbs-up on the first, a flag on the second, thumbs-down on the
                                           third (its reply is :data:`PAYLOAD`)
(outside window)   99999                   thumbs-down; 3 days old, so none of it may count
=================  ======================  =============================================================

and 20 HTTP requests, one of them a 500.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from rlhf.core.errors import UserError
from rlhf.serving.store import FeedbackStore, ReplyRecord
from rlhf.stages import load_config
from rlhf.stages.monitor import run_monitor

PAYLOAD = "<script>window.__pwned = 1</script><b>bold</b>"
COMMENT = '<img src=x onerror="window.__pwned_img = 1">wrong answer'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
LATENCIES = {"returns": [100.0, 200.0, 300.0, 400.0], "order_status": [500.0, 600.0, 700.0, 800.0, 900.0, 1000.0]}
# The at-threshold values (np.percentile, linear): the figures of the table above.
P50, P95 = 550.0, 955.0
# Alerts at exactly the window's figures: none may fire (an alert fires only above its threshold).
AT = {"latency_p95_ms": P95 + 1e-6, "error_rate": 0.05, "thumbs_down_rate": 0.2, "escalation_rate": 0.1}
BELOW = {"latency_p95_ms": P95 - 1e-3, "error_rate": 0.049, "thumbs_down_rate": 0.19, "escalation_rate": 0.09}


def _reply(store: FeedbackStore, rid: str, category: str, latency: float, created: float, text: str = "ok",
           flags: tuple[str, ...] = ()) -> str:
    store.add_reply(ReplyRecord(
        id=rid, conversation_id=f"conv-{rid}", turn=1, user="customer", model="rlhf-policy",
        messages=[{"role": "user", "content": f"question {rid}"}], reply=text, category=category, latency_ms=latency,
        prompt_tokens=5, completion_tokens=10, finish_reason="stop", flags=list(flags), created=created))
    return rid


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'serve' / 'feedback.db'}"
    store = FeedbackStore(url)
    now = time.time()
    ids = {c: [_reply(store, f"{c}-{i}", c, lat, now - (7200 if (c, i) == ("returns", 0) else 60 - i),
                      text=PAYLOAD if (c, i) == ("order_status", 2) else f"answer {i}",
                      flags=("prompt_injection",) if (c, i) == ("order_status", 1) else ())
               for i, lat in enumerate(lats)] for c, lats in LATENCIES.items()}
    store.add_feedback(ids["returns"][0], "thumbs_down", comment=COMMENT)
    store.add_feedback(ids["returns"][1], "escalate")
    store.add_feedback(ids["order_status"][0], "thumbs_up")
    store.add_feedback(ids["order_status"][2], "thumbs_down")
    old = _reply(store, "old", "returns", 99999.0, now - 3 * 86400)
    store.add_feedback(old, "thumbs_down")
    for i in range(20):
        store.log_request("/v1/chat/completions", 500 if i == 7 else 200, 10.0)
    return url


def _monitor(url: str, *overrides: str) -> tuple[Path, dict]:
    cfg = load_config(None, [f"store.url={url}", *overrides], expect_stage="monitor")
    out = run_monitor(cfg)
    return out, json.loads(out.with_suffix(".json").read_text())


def _alerts(thresholds: dict[str, float]) -> list[str]:
    """Overrides setting these thresholds, with the drift alert off (no baseline here)."""
    return [f"alerts.{k}={v!r}" for k, v in thresholds.items()] + ["alerts.rm_drift=null"]


def test_figures_per_window_and_category(store_url, tmp_path, capsys):
    out, figures = _monitor(store_url)
    assert out.parent == tmp_path / "serve" / "monitor" and out.name.startswith("monitor-") and out.suffix == ".html"
    overall = figures["overall"]
    assert overall["replies"] == 10  # the 3-day-old reply is outside the 24 h window
    assert overall["latency_p50_ms"] == pytest.approx(P50) and overall["latency_p95_ms"] == pytest.approx(P95)
    assert overall["requests"] == 20 and overall["errors"] == 1 and overall["error_rate"] == pytest.approx(0.05)
    assert overall["thumbs_down_rate"] == pytest.approx(0.2) and overall["escalation_rate"] == pytest.approx(0.1)
    assert overall["thumbs_up_rate"] == pytest.approx(0.1) and overall["abandon_rate"] == pytest.approx(0.1)
    assert overall["feedback"] == {"thumbs_down": 2, "escalate": 1, "thumbs_up": 1, "abandon": 1}
    assert figures["abandoned_added"] == 2  # the 2 h old thumbs-down reply, and the old one (outside the window)
    returns, orders = figures["categories"]["returns"], figures["categories"]["order_status"]
    assert returns["replies"] == 4 and orders["replies"] == 6
    assert returns["latency_p50_ms"] == pytest.approx(250.0) and returns["latency_p95_ms"] == pytest.approx(385.0)
    assert orders["latency_p50_ms"] == pytest.approx(750.0) and orders["latency_p95_ms"] == pytest.approx(975.0)
    assert returns["thumbs_down_rate"] == pytest.approx(0.25) and returns["escalation_rate"] == pytest.approx(0.25)
    assert returns["abandon_rate"] == pytest.approx(0.25)
    assert orders["thumbs_down_rate"] == pytest.approx(1 / 6) and orders["escalation_rate"] == 0.0
    assert orders["thumbs_up_rate"] == pytest.approx(1 / 6)
    assert "error_rate" not in returns  # requests carry no category
    assert figures["drift"] is None and figures["scored"] == 0
    assert f"-> {out}" in capsys.readouterr().out


def test_alerts_fire_exactly_above_their_thresholds(store_url, tmp_path, capsys):
    _, figures = _monitor(store_url, *_alerts(AT), f"out={tmp_path / 'at.html'}")
    assert {a["name"]: a["fired"] for a in figures["alerts"]} == {k: False for k in AT}
    assert "alerts fired: none" in capsys.readouterr().out
    _, figures = _monitor(store_url, *_alerts(BELOW), f"out={tmp_path / 'below.html'}")
    assert {a["name"]: a["fired"] for a in figures["alerts"]} == {k: True for k in BELOW}
    line = capsys.readouterr().out
    assert all(f"{name} " in line.split("alerts fired:")[1] for name in BELOW)
    html = (tmp_path / "below.html").read_text()
    assert html.count("ALERT ") == len(BELOW)
    # One at a time: only the alert whose threshold is crossed fires, and null turns one off.
    for name, below in BELOW.items():
        _, figures = _monitor(store_url, *_alerts({**AT, name: below}), f"out={tmp_path / f'{name}.html'}")
        assert [a["name"] for a in figures["alerts"] if a["fired"]] == [name]
        assert "rm_drift" not in {a["name"] for a in figures["alerts"]}


def test_report_escapes_every_stored_text(store_url):
    out, _ = _monitor(store_url)
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<img" not in html.lower() and "<b>bold</b>" not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;img src=x onerror=&quot;window.__pwned_img = 1&quot;&gt;wrong answer" in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    for heading in ("Alerts", "Overall", "Per category", "Reward-model drift", "Replies with negative feedback or flags"):
        assert f">{heading}<" in html
    # The sample: the thumbs-down, escalated and flagged replies of the window, not the thumbs-up nor the old one.
    assert "order_status-1" in html and "returns-0" in html and "returns-1" in html
    assert "order_status-0" not in html.split(">Replies with negative feedback")[1] and "question old" not in html


def _eval_folder(root: Path, scores: list[float]) -> Path:
    """Stands for an ``rlhf eval`` stage folder: the ``samples.parquet`` columns the monitor reads (``policy``,
    ``category``, ``score/rm/<name>``, with ``raw/rm/<name>`` and a second policy as the stage writes them) and
    the ``results.json`` naming the reward model's path. Building a real eval needs models and minutes; the
    stage's own tests cover what it writes."""
    import pandas as pd

    rows = [{"policy": policy, "prompt_index": i, "prompt": f"p{i}", "category": ("returns", "order_status")[i % 2],
             "sample": 0, "reply": "r", "score/rm/demo": s + (0.0 if policy == "dpo" else -3.0),
             "raw/rm/demo": s * 2} for policy in ("sft", "dpo") for i, s in enumerate(scores)]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / "samples.parquet", index=False)
    (root / "results.json").write_text(json.dumps({"reward_models": {"demo": {"model_path": "/models/rm"}}}))
    return root


BASELINE = [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 0.0]  # mean 0; the served scores are these plus SHIFT
BASE_STD = float(np.std(BASELINE, ddof=1))


@pytest.mark.parametrize("shift_std", [1.0, -1.0])
def test_rm_drift_against_the_eval_baseline(store_url, tmp_path, shift_std):
    store = FeedbackStore(store_url)
    window = [r["id"] for r in store.replies(time.time() - 86400)]
    served = [BASELINE[i % len(BASELINE)] + shift_std * BASE_STD for i in range(len(window))]
    store.set_rm_scores(dict(zip(window, served)))
    eval_dir = _eval_folder(tmp_path / "eval", BASELINE)
    base = [f"baseline.eval_dir={eval_dir}", "baseline.policy=dpo"]
    _, figures = _monitor(store_url, *base, f"alerts.rm_drift={abs(shift_std) + 0.01}")
    drift = figures["drift"]
    assert drift["baseline"]["n"] == len(BASELINE) and drift["baseline"]["mean"] == pytest.approx(0.0)
    assert drift["baseline"]["std"] == pytest.approx(BASE_STD)
    assert drift["served"]["n"] == 10 and drift["served"]["mean"] == pytest.approx(np.mean(served))
    expected = (np.mean(served) - 0.0) / BASE_STD
    assert drift["shift_std"] == pytest.approx(expected)
    assert 0 < drift["ks"] <= 1
    assert drift["source"]["policy"] == "dpo" and drift["source"]["baseline_reward_model"] == "/models/rm"
    assert set(drift["categories"]) == {"returns", "order_status"}
    assert drift["categories"]["returns"]["baseline_n"] == 4 and drift["categories"]["returns"]["served_n"] == 4
    assert [a["fired"] for a in figures["alerts"] if a["name"] == "rm_drift"] == [abs(expected) > abs(shift_std) + 0.01]
    _, figures = _monitor(store_url, *base, f"alerts.rm_drift={abs(expected) - 0.01}",
                          f"out={tmp_path / 'fired.html'}")
    assert [a["fired"] for a in figures["alerts"] if a["name"] == "rm_drift"] == [True]
    html = (tmp_path / "fired.html").read_text()
    assert "ALERT rm_drift" in html and html.count("<svg") == 1  # the served-vs-baseline histogram
    # The same served scores against the other policy (3 lower): a larger shift, always above.
    _, figures = _monitor(store_url, f"baseline.eval_dir={eval_dir}", "baseline.policy=sft",
                          f"out={tmp_path / 'sft.html'}")
    assert figures["drift"]["shift_std"] == pytest.approx((np.mean(served) + 3.0) / BASE_STD)


def test_reward_model_scores_unscored_replies_of_the_window(store_url, tmp_path):
    """A tiny sequence-classification model saved with its head (so every load gives the same scores) and a
    ``reward_stats.json``: the window's unscored replies get (raw - mean) / std, an already scored reply keeps its
    score, and the reply outside the window stays unscored."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path
    from rlhf.models.reward import reward_scores

    tiny = resolve_model_path("tiny")
    rm = tmp_path / "rm"
    AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1).save_pretrained(rm)
    load_tokenizer(tiny).save_pretrained(rm)
    (rm / "reward_stats.json").write_text(json.dumps({"mean": 0.25, "std": 2.0}))
    store = FeedbackStore(store_url)
    store.set_rm_scores({"returns-2": 7.5})
    _, figures = _monitor(store_url, f"reward_model={rm}", "scoring.device=cpu")
    assert figures["scored"] == 9 and figures["overall"]["rm_scored"] == 10
    rows = {r["id"]: r for r in store.replies()}
    assert rows["returns-2"]["rm_score"] == 7.5 and rows["old"]["rm_score"] is None
    ids = [i for i in rows if i not in ("returns-2", "old")]
    raw = reward_scores(load_model(str(rm), "reward", device="cpu"), load_tokenizer(str(rm)),
                        [rows[i]["messages"] for i in ids], [rows[i]["reply"] for i in ids])
    assert [rows[i]["rm_score"] for i in ids] == pytest.approx([(r - 0.25) / 2.0 for r in raw], abs=1e-5)
    _, again = _monitor(store_url, f"reward_model={rm}", "scoring.device=cpu",
                        f"out={tmp_path / 'again.html'}")
    assert again["scored"] == 0  # each reply is scored once


def test_bad_inputs_are_one_line_errors_naming_the_key(store_url, tmp_path):
    with pytest.raises(UserError, match=r"^store\.url: no feedback store at .*missing\.db"):
        _monitor(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()  # not created empty
    with pytest.raises(UserError, match=r"baseline\.eval_dir .* holds no samples\.parquet"):
        _monitor(store_url, f"baseline.eval_dir={tmp_path / 'nowhere'}", "baseline.policy=dpo")
    eval_dir = _eval_folder(tmp_path / "eval", BASELINE)
    with pytest.raises(UserError, match=r"baseline\.policy 'ppo' is not in .*\(policies: dpo, sft\)"):
        _monitor(store_url, f"baseline.eval_dir={eval_dir}", "baseline.policy=ppo")
    with pytest.raises(UserError, match=r"baseline\.reward_model 'gold' .*reward models there: demo"):
        _monitor(store_url, f"baseline.eval_dir={eval_dir}", "baseline.policy=dpo",
                 "baseline.reward_model=gold")
    with pytest.raises(UserError, match=r"^reward_model .*nowhere"):
        _monitor(store_url, f"reward_model={tmp_path / 'nowhere'}")
    from rlhf.core.config import ConfigError

    with pytest.raises(ConfigError, match="baseline.policy"):
        load_config(None, [f"baseline.eval_dir={eval_dir}"], expect_stage="monitor")
    with pytest.raises(ConfigError, match="unknown key 'thumbs_down'"):
        load_config(None, ["alerts.thumbs_down=0.1"], expect_stage="monitor")


@pytest.mark.slow
def test_report_in_chromium_shows_script_as_text(store_url, tmp_path, repo_root):
    """The written report opened from its file:// URL: the stored ``<script>`` and ``<b>`` of a reply are visible
    text, nothing ran, and no element came from them. A copy without the Content-Security-Policy proves that
    escaping alone keeps the payload inert."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    for what, ok, hint in (("playwright", sync_playwright is not None, "pip install -e .[dev]"),
                           ("chromium", Path(CHROMIUM).exists(), "apt-get install -y chromium")):
        if not ok:
            message = f"{what} is not installed ({hint})"
            pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from rlhf.stages.report import CHROMIUM_FLAGS

    out, _ = _monitor(store_url)
    text = out.read_text(encoding="utf-8")
    start = text.index('<meta http-equiv="Content-Security-Policy"')
    no_csp = out.with_name("no-csp.html")
    no_csp.write_text(text[:start] + text[text.index(">", start) + 1:], encoding="utf-8")
    artifacts = repo_root / "test-artifacts" / "serving"
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            for path in (out, no_csp):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                requests: list[str] = []
                page.on("request", lambda req, seen=requests: seen.append(req.url))
                page.goto(path.resolve().as_uri())
                page.wait_for_load_state("load")
                shown = page.get_by_text(PAYLOAD, exact=True)
                assert shown.count() == 1 and shown.first.is_visible()
                assert page.get_by_text(COMMENT, exact=True).first.is_visible()
                assert page.evaluate("typeof window.__pwned") == "undefined"
                assert page.evaluate("typeof window.__pwned_img") == "undefined"
                assert page.locator("script").count() == 0 and page.locator("img").count() == 0
                assert page.locator("pre b").count() == 0 and page.locator("b", has_text="bold").count() == 0
                assert requests == [path.resolve().as_uri()], requests
                assert page.locator("h2", has_text="Per category").is_visible()
                if path == out:
                    page.screenshot(path=str(artifacts / "monitor.png"), full_page=True)
                page.close()
        finally:
            browser.close()
