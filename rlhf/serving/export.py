"""From a window of feedback to the next round's prompts: every reply that drew a negative signal (thumbs-down,
escalation, an ask for a human, a rephrase, an abandoned conversation) gives back the user's message it failed
(rephrased questions included; a bare request for a human is a signal, not a question, and is left out),
deduplicated by normalised text, with provenance (reply ids, signals, model, conversation, time) in its
metadata and any human reply written for an escalation. The file is a prompts JSONL (``prompt``, ``id``,
``metadata``) that ``prepare`` (``source.kind: file``), ``generate`` (``prompts.path``) and the pipeline read.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import atomic_write_text
from rlhf.data.prompts import normalize_text, prompt_id
from rlhf.serving.signals import asks_for_human
from rlhf.serving.store import FeedbackStore

__all__ = ["NEGATIVE_KINDS", "export_rows", "write_export"]

NEGATIVE_KINDS: frozenset[str] = frozenset({"thumbs_down", "escalate", "ask_human", "rephrase", "abandon"})


def export_rows(store: FeedbackStore, since: float, until: float, abandon_after_s: float | None = None,
                kinds: frozenset[str] = NEGATIVE_KINDS) -> list[dict[str, Any]]:
    """The prompts of the window's replies with a negative signal, one row per distinct question."""
    if abandon_after_s is not None:
        store.derive_abandoned(abandon_after_s, now=until)
    replies = {r["id"]: r for r in store.replies(since, until)}
    signals: dict[str, list[dict]] = defaultdict(list)
    for event in store.feedback_of(list(replies)):
        signals[event["reply_id"]].append(event)
    rows: dict[str, dict[str, Any]] = {}
    for reply_id, reply in replies.items():
        events = signals.get(reply_id, [])
        bad = sorted({e["kind"] for e in events} & kinds)
        if not bad or "thumbs_up" in {e["kind"] for e in events}:
            continue
        text = normalize_text(reply["prompt"])
        if not text or asks_for_human(text):  # a signal about the reply before it, not a question to answer
            continue
        key = prompt_id(text)
        row = rows.setdefault(key, {"id": key, "prompt": text, "metadata": {
            "source": "feedback", "signals": {}, "replies": [], "conversations": [], "models": [],
            "human_replies": [], "category": reply["category"], "first_seen": reply["created"]}})
        meta = row["metadata"]
        for kind in bad:
            meta["signals"][kind] = meta["signals"].get(kind, 0) + 1
        meta["replies"].append({"id": reply_id, "reply": reply["reply"], "created": reply["created"]})
        for name, value in (("conversations", reply["conversation_id"]), ("models", reply["model"])):
            if value not in meta[name]:
                meta[name].append(value)
        meta["human_replies"].extend(e["human_reply"] for e in events if e["human_reply"])
    return sorted(rows.values(), key=lambda r: r["metadata"]["first_seen"])


def write_export(store: FeedbackStore, rows: list[dict[str, Any]], path: str | Path, since: float,
                 until: float) -> Path:
    """Write the rows atomically with a sidecar of the window, and record which replies went out (so
    ``rlhf feedback forget`` can mark this file)."""
    path = Path(path)
    stamp = time.time()
    for row in rows:
        row["metadata"]["exported"] = stamp
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(path.with_name(path.name + ".meta.json"), json.dumps(
        {"store": store.url.split("@")[-1], "since": since, "until": until, "exported": stamp, "prompts": len(rows),
         "replies": sum(len(r["metadata"]["replies"]) for r in rows)}, indent=2))
    store.record_export(str(path.resolve()), [rep["id"] for r in rows for rep in r["metadata"]["replies"]])
    return path
