"""The serving figures, computed from the feedback store so they are exact across replicas and restarts:
:func:`window_summary` (pure, over rows) feeds both the Prometheus endpoint (``/metrics``,
:func:`prometheus_text`) and ``rlhf monitor``'s report.

Metric names (Prometheus, prefix ``rlhf_serve_``):

=====================================  =========================================================================
``replies_total``                      replies served (counter)
``requests_total{route,status}``       HTTP requests by route and status code, errors included (counter)
``feedback_total{kind,source}``        feedback events by kind (thumbs_up, thumbs_down, escalate, comment,
                                       rephrase, ask_human, abandon) and source (explicit, implicit) (counter)
``flags_total{flag}``                  guardrail flags raised on prompts and replies (counter)
``latency_ms{quantile}``               reply latency p50/p95 over the window (gauge)
``tokens_per_second``                  completion tokens per second of generation over the window (gauge)
``thumbs_down_rate``, ``escalation_rate``, ``rephrase_rate``
                                       share of the window's replies with that signal (gauge)
``rm_score_mean``                      mean reward-model score of the window's scored replies (gauge; scored by
                                       ``rlhf monitor``)
=====================================  =========================================================================
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from rlhf.serving.store import FeedbackStore

__all__ = ["prometheus_text", "window_summary"]


def _rate(replies: list[dict], by_reply: dict[str, set[str]], kinds: set[str]) -> float:
    if not replies:
        return 0.0
    return sum(1 for r in replies if by_reply.get(r["id"], set()) & kinds) / len(replies)


def window_summary(replies: list[dict[str, Any]], feedback: list[dict[str, Any]],
                   requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency, throughput, error and feedback figures of one window's rows."""
    by_reply: dict[str, set[str]] = {}
    for event in feedback:
        by_reply.setdefault(event["reply_id"], set()).add(event["kind"])
    latency = np.array([r["latency_ms"] for r in replies], dtype=float)
    gen_s = latency.sum() / 1000.0
    tokens = sum(r["completion_tokens"] for r in replies)
    scores = [r["rm_score"] for r in replies if r.get("rm_score") is not None]
    errors = sum(1 for q in requests if q["status"] >= 400)
    return {
        "replies": len(replies),
        "requests": len(requests),
        "errors": errors,
        "error_rate": errors / len(requests) if requests else 0.0,
        "latency_p50_ms": float(np.percentile(latency, 50)) if len(latency) else None,
        "latency_p95_ms": float(np.percentile(latency, 95)) if len(latency) else None,
        "tokens_per_second": tokens / gen_s if gen_s > 0 else None,
        "mean_reply_tokens": tokens / len(replies) if replies else None,
        "thumbs_up_rate": _rate(replies, by_reply, {"thumbs_up"}),
        "thumbs_down_rate": _rate(replies, by_reply, {"thumbs_down"}),
        "escalation_rate": _rate(replies, by_reply, {"escalate", "ask_human"}),
        "rephrase_rate": _rate(replies, by_reply, {"rephrase"}),
        "abandon_rate": _rate(replies, by_reply, {"abandon"}),
        "rm_score_mean": float(np.mean(scores)) if scores else None,
        "rm_scored": len(scores),
        "flags": dict(Counter(f for r in replies for f in r["flags"])),
        "feedback": dict(Counter(e["kind"] for e in feedback)),
    }


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def prometheus_text(store: FeedbackStore, window_s: float = 3600.0) -> str:
    """The Prometheus exposition text: counters over the whole store, gauges over the last ``window_s``."""
    now = time.time()
    replies, feedback, requests = store.replies(), store.feedback(), store.requests()
    recent = [r for r in replies if r["created"] >= now - window_s]
    recent_ids = {r["id"] for r in recent}
    summary = window_summary(recent, [e for e in feedback if e["reply_id"] in recent_ids],
                             [q for q in requests if q["created"] >= now - window_s])
    lines = ["# HELP rlhf_serve_replies_total Replies served.", "# TYPE rlhf_serve_replies_total counter",
             f"rlhf_serve_replies_total {len(replies)}",
             "# HELP rlhf_serve_requests_total HTTP requests by route and status.",
             "# TYPE rlhf_serve_requests_total counter"]
    for (route, status), n in sorted(Counter((q["route"], q["status"]) for q in requests).items()):
        lines.append(f'rlhf_serve_requests_total{{route="{_label(route)}",status="{status}"}} {n}')
    lines += ["# HELP rlhf_serve_feedback_total Feedback events by kind and source.",
              "# TYPE rlhf_serve_feedback_total counter"]
    for (kind, source), n in sorted(Counter((e["kind"], e["source"]) for e in feedback).items()):
        lines.append(f'rlhf_serve_feedback_total{{kind="{kind}",source="{source}"}} {n}')
    lines += ["# HELP rlhf_serve_flags_total Guardrail flags raised.", "# TYPE rlhf_serve_flags_total counter"]
    for flag, n in sorted(Counter(f for r in replies for f in r["flags"]).items()):
        lines.append(f'rlhf_serve_flags_total{{flag="{_label(flag)}"}} {n}')
    lines += [f"# HELP rlhf_serve_latency_ms Reply latency over the last {window_s:.0f} s.",
              "# TYPE rlhf_serve_latency_ms gauge"]
    for q, key in (("0.5", "latency_p50_ms"), ("0.95", "latency_p95_ms")):
        if summary[key] is not None:
            lines.append(f'rlhf_serve_latency_ms{{quantile="{q}"}} {summary[key]:.3f}')
    for key in ("tokens_per_second", "thumbs_down_rate", "escalation_rate", "rephrase_rate", "rm_score_mean"):
        if summary[key] is not None:
            lines += [f"# TYPE rlhf_serve_{key} gauge", f"rlhf_serve_{key} {summary[key]:.6g}"]
    return "\n".join(lines) + "\n"
