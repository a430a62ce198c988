"""The monitoring report of ``rlhf monitor``: pure functions from the store's rows and the window's summaries
(:func:`rlhf.serving.monitoring.window_summary`) to figures and one self-contained HTML page.

- :func:`rm_drift`: the served replies' reward-model scores against the scores the same reward model gave the
  served checkpoint in its evaluation (``samples.parquet`` of ``rlhf eval``): both means and standard deviations,
  the shift of the mean in baseline standard deviations, quantiles, the two-sample Kolmogorov-Smirnov distance
  (the largest gap between the two empirical CDFs), and the same means per category.
- :func:`check_alerts`: each configured threshold against the overall figures; an alert fires when its figure
  is strictly above the threshold (``rm_drift``: the absolute shift).
- :func:`render_monitor_report`: the page (inline CSS and SVG; no script, no network).

Security: every text that comes from the store (replies, prompts, comments, categories, model names, flags) goes
through :func:`html.escape` on its way into the page, and replies sit in ``<pre>`` blocks, so a reply holding
``<script>`` shows as that text. Only markup built here is trusted (:class:`Html`). The page also carries a
Content-Security-Policy forbidding scripts and any fetch, as a second line of defence.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import numpy as np

from rlhf.eval.svg import histogram_chart

__all__ = ["ALERT_FIGURES", "Html", "check_alerts", "render_monitor_report", "rm_drift"]

# Alert name -> (where its figure is, how it is shown).
ALERT_FIGURES: dict[str, tuple[str, str]] = {
    "latency_p95_ms": ("overall", "ms"),
    "error_rate": ("overall", "rate"),
    "thumbs_down_rate": ("overall", "rate"),
    "escalation_rate": ("overall", "rate"),
    "rm_drift": ("drift", "std"),
}
QUANTILES = (10, 25, 50, 75, 90)
NEGATIVE_KINDS = frozenset({"thumbs_down", "escalate", "ask_human", "rephrase", "abandon"})

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:24px}h2{font-size:19px;border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:13px}.na{color:#999;font-style:italic}
.flag{background:#fdecea;border-left:5px solid #c0392b;padding:6px 10px;margin:6px 0;font-size:14px}
.ok{background:#eaf7ee;border-left:5px solid #2e8b57;padding:6px 10px;margin:6px 0;font-size:14px}
tr.flagged td{background:#fff1e0}
.reply{border:1px solid #ddd;margin:10px 0;padding:6px 10px}
.reply pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;border:1px solid #ddd;padding:8px;
margin:4px 0;font-size:12.5px}
"""


class Html(str):
    """Markup built by this module (trusted); every other string is escaped."""


# -- figures ------------------------------------------------------------------------------------------------

def _stats(values: np.ndarray) -> dict[str, Any]:
    if not values.size:
        return {"n": 0, "mean": None, "std": None, "quantiles": {}}
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1
            else 0.0, "quantiles": {f"p{q}": float(np.percentile(values, q)) for q in QUANTILES}}


def ks_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs of ``a`` and ``b``."""
    if not a.size or not b.size:
        return None
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, grid, side="right") / a.size - np.searchsorted(b, grid, side="right") / b.size)
    return float(gap.max())


def _shift(mean: float | None, base_mean: float | None, base_std: float | None) -> float | None:
    if mean is None or base_mean is None or not base_std:
        return None
    return (mean - base_mean) / base_std


def rm_drift(served: Sequence[tuple[str, float]], baseline: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Drift of the served replies' RM scores from the baseline's; both given as (category, score) pairs on the
    same scale. ``shift_std`` is (served mean - baseline mean) / baseline std, None without a spread."""
    s = np.array([v for _, v in served], dtype=float)
    b = np.array([v for _, v in baseline], dtype=float)
    served_stats, base_stats = _stats(s), _stats(b)
    categories: dict[str, dict[str, Any]] = {}
    for category in sorted({c for c, _ in served} | {c for c, _ in baseline}):
        cs = np.array([v for c, v in served if c == category], dtype=float)
        cb = np.array([v for c, v in baseline if c == category], dtype=float)
        mean = float(cs.mean()) if cs.size else None
        base_mean = float(cb.mean()) if cb.size else None
        categories[category] = {"served_n": int(cs.size), "served_mean": mean, "baseline_n": int(cb.size),
                                "baseline_mean": base_mean,
                                "shift_std": _shift(mean, base_mean, base_stats["std"])}
    return {"served": served_stats, "baseline": base_stats,
            "shift_std": _shift(served_stats["mean"], base_stats["mean"], base_stats["std"]),
            "ks": ks_distance(s, b), "categories": categories}


def check_alerts(overall: Mapping[str, Any], drift: Mapping[str, Any] | None,
                 thresholds: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """One entry per configured threshold: its figure's value (None when the window has none) and whether it
    fired (value strictly above the threshold; ``rm_drift`` compares the absolute shift)."""
    out = []
    for name, threshold in thresholds.items():
        if threshold is None:
            continue
        where, _ = ALERT_FIGURES[name]
        if where == "drift":
            shift = drift.get("shift_std") if drift else None
            value = None if shift is None else abs(shift)
        else:
            value = overall.get(name)
        out.append({"name": name, "value": value, "threshold": float(threshold),
                    "fired": value is not None and value > threshold})
    return out


# -- HTML ---------------------------------------------------------------------------------------------------

def _num(value: Any, unit: str = "") -> Html | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if unit == "rate":
        return Html(escape(f"{value:.1%}"))
    if unit == "ms":
        return Html(escape(f"{value:,.1f} ms"))
    if unit == "std":
        return Html(escape(f"{value:+.2f} std" if value < 0 else f"{value:.2f} std"))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return Html(str(int(value)))
    return Html(escape(f"{float(value):.4g}"))


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="na">not available</td>'
    if isinstance(value, Html):
        return f'<td class="num">{value}</td>'
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return f'<td class="num">{_num(value)}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], flagged: Sequence[bool] = ()) -> Html:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    marks = [' class="flagged"' if f else "" for f in flagged] + [""] * (len(rows) - len(flagged))
    body = "".join(f"<tr{mark}>" + "".join(_cell(v) for v in row) + "</tr>" for mark, row in zip(marks, rows))
    return Html(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def _time(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


FIGURE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("replies", "replies", ""),
    ("latency_p50_ms", "latency p50", "ms"),
    ("latency_p95_ms", "latency p95", "ms"),
    ("tokens_per_second", "tokens / s of generation", ""),
    ("mean_reply_tokens", "mean reply tokens", ""),
    ("thumbs_up_rate", "thumbs-up rate", "rate"),
    ("thumbs_down_rate", "thumbs-down rate", "rate"),
    ("escalation_rate", "escalation rate (escalate or ask for a human)", "rate"),
    ("rephrase_rate", "rephrase rate", "rate"),
    ("abandon_rate", "abandon rate", "rate"),
    ("rm_score_mean", "mean RM score", ""),
    ("rm_scored", "replies with an RM score", ""),
)
CATEGORY_COLUMNS = ("replies", "latency_p50_ms", "latency_p95_ms", "thumbs_down_rate", "escalation_rate",
                    "rephrase_rate", "abandon_rate", "rm_score_mean")


def _alerts(alerts: Sequence[Mapping[str, Any]]) -> str:
    fired = [a for a in alerts if a["fired"]]
    units = {name: unit for name, (_, unit) in ALERT_FIGURES.items()}
    lines = "".join(f"<div class='flag'>ALERT {escape(a['name'])}: {_num(a['value'], units[a['name']])} is above "
                    f"{_num(a['threshold'], units[a['name']])}</div>" for a in fired)
    if not fired:
        lines = "<div class='ok'>No alert fired.</div>" if alerts else "<p class='na'>No threshold configured.</p>"
    rows = [[a["name"], _num(a["value"], units[a["name"]]), _num(a["threshold"], units[a["name"]]),
             "FIRED" if a["fired"] else ("no data" if a["value"] is None else "ok")] for a in alerts]
    return _section("Alerts", lines, _table(["figure", "value", "threshold", "status"], rows,
                                            [a["fired"] for a in alerts]))


def _overall(overall: Mapping[str, Any]) -> str:
    rows = [[label, _num(overall.get(key), unit)] for key, label, unit in FIGURE_ROWS]
    rows[1:1] = [["HTTP requests", _num(overall.get("requests"))], ["errors (status >= 400)", _num(overall.get("errors"))],
                 ["error rate", _num(overall.get("error_rate"), "rate")]]
    counts = [[f"feedback: {k}", v] for k, v in sorted(overall.get("feedback", {}).items())]
    counts += [[f"flag: {k}", v] for k, v in sorted(overall.get("flags", {}).items())]
    return _section("Overall", _table(["figure", "value"], rows),
                    _table(["feedback events and guardrail flags", "count"], counts) if counts
                    else "<p class='na'>No feedback events or flags in the window.</p>")


def _categories(categories: Mapping[str, Mapping[str, Any]], thresholds: Mapping[str, float | None]) -> str:
    if not categories:
        return _section("Per category", "<p class='na'>No replies in the window.</p>")
    units = {key: unit for key, _, unit in FIGURE_ROWS}
    labels = {key: label for key, label, _ in FIGURE_ROWS}
    rows, flagged = [], []
    for name, summary in categories.items():
        rows.append([name, *(_num(summary.get(k), units[k]) for k in CATEGORY_COLUMNS)])
        flagged.append(any(thresholds.get(k) is not None and summary.get(k) is not None
                           and summary[k] > thresholds[k] for k in CATEGORY_COLUMNS))
    note = "<p class='meta'>Rows above an alert threshold are marked (alerts fire on the overall figures).</p>"
    return _section("Per category", note, _table(["category", *(labels[k] for k in CATEGORY_COLUMNS)], rows, flagged))


def _drift(drift: Mapping[str, Any] | None, served: Sequence[float], baseline: Sequence[float]) -> str:
    if drift is None:
        return _section("Reward-model drift", "<p class='na'>No baseline configured (baseline.eval_dir).</p>")
    source = drift.get("source", {})
    meta = (f"<p class='meta'>Baseline: policy <b>{escape(str(source.get('policy')))}</b> in "
            f"{escape(str(source.get('eval_dir')))}, column {escape(str(source.get('column')))}; served replies "
            f"scored with {escape(str(source.get('served_reward_model') or 'the scores already in the store'))}. "
            "Shift: (served mean - baseline mean) / baseline std.</p>")
    s, b = drift["served"], drift["baseline"]
    rows = [[label, _num(s.get(key)), _num(b.get(key))] for key, label in (("n", "scores"), ("mean", "mean"),
                                                                            ("std", "std"))]
    rows += [[q, _num(s["quantiles"].get(q)), _num(b["quantiles"].get(q))] for q in (f"p{q}" for q in QUANTILES)]
    summary = _table(["", "served (window)", "baseline (eval)"], rows)
    shift = (f"<p>Mean shift: <b>{_num(drift['shift_std'], 'std') or 'not available'}</b>; Kolmogorov-Smirnov "
             f"distance: <b>{_num(drift['ks']) or 'not available'}</b>.</p>")
    cat_rows = [[c, v["served_n"], _num(v["served_mean"]), v["baseline_n"], _num(v["baseline_mean"]),
                 _num(v["shift_std"], "std")] for c, v in drift["categories"].items()]
    per_cat = _table(["category", "served n", "served mean", "baseline n", "baseline mean", "shift"], cat_rows)
    chart = (histogram_chart([("served", list(served)), ("baseline", list(baseline))], "RM score: served vs baseline",
                             "RM score") if len(served) and len(baseline) else "")
    return _section("Reward-model drift", meta, shift, summary, chart, per_cat)


def _reply_card(row: Mapping[str, Any]) -> str:
    kinds = ", ".join(sorted(row.get("kinds", ()))) or "none"
    flags = ", ".join(row.get("flags", ())) or "none"
    score = row.get("rm_score")
    meta = (f"<p class='meta'>{escape(_time(row['created']))} · category <b>{escape(str(row['category']))}</b> · "
            f"model {escape(str(row['model']))} · feedback: <b>{escape(kinds)}</b> · flags: <b>{escape(flags)}</b> · "
            f"RM score {escape(f'{score:.3g}' if score is not None else 'none')} · {escape(str(row['id']))}</p>")
    comments = "".join(f"<p class='meta'>comment:</p><pre>{escape(c)}</pre>" for c in row.get("comments", ()))
    return (f"<div class='reply'>{meta}<p class='meta'>customer:</p><pre>{escape(str(row['prompt']))}</pre>"
            f"<p class='meta'>reply:</p><pre>{escape(str(row['reply']))}</pre>{comments}</div>")


def negative_samples(replies: Sequence[Mapping[str, Any]], feedback: Sequence[Mapping[str, Any]],
                     count: int) -> list[dict[str, Any]]:
    """The newest ``count`` replies that drew negative feedback (thumbs-down, escalate, ask_human, rephrase,
    abandon) or a guardrail flag, each with its feedback kinds and comments."""
    kinds: dict[str, set[str]] = {}
    comments: dict[str, list[str]] = {}
    for event in feedback:
        kinds.setdefault(event["reply_id"], set()).add(event["kind"])
        if event.get("comment"):
            comments.setdefault(event["reply_id"], []).append(event["comment"])
    picked = [r for r in replies if kinds.get(r["id"], set()) & NEGATIVE_KINDS or r["flags"]]
    picked.sort(key=lambda r: r["created"], reverse=True)
    return [{**r, "kinds": sorted(kinds.get(r["id"], ())), "comments": comments.get(r["id"], [])}
            for r in picked[:count]]


def render_monitor_report(figures: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                          served_scores: Sequence[float] = (), baseline_scores: Sequence[float] = (),
                          title: str = "Served model monitoring") -> str:
    """The whole page from the figures ``rlhf monitor`` writes as JSON, the sampled replies
    (:func:`negative_samples`) and the two score distributions of the drift section."""
    window = figures["window"]
    fired = sum(a["fired"] for a in figures["alerts"])
    meta = (f"<p class='meta'>Window {escape(_time(window['since']))} to {escape(_time(window['until']))} "
            f"({window['since_hours']:g} h); store {escape(str(figures['store']))}; "
            f"generated {escape(_time(figures['generated']))}. {int(figures.get('scored', 0))} replies scored by "
            f"the reward model in this run; {int(figures.get('abandoned_added', 0))} abandoned conversations "
            f"derived. {fired} alert(s) fired.</p>")
    shown = ("".join(_reply_card(r) for r in samples) if samples
             else "<p class='na'>No reply in the window drew negative feedback or a flag.</p>")
    body = "".join([
        f"<h1>{escape(title)}</h1>", meta, _alerts(figures["alerts"]), _overall(figures["overall"]),
        _categories(figures["categories"], figures["thresholds"]),
        _drift(figures.get("drift"), served_scores, baseline_scores),
        _section("Replies with negative feedback or flags", f"<p class='meta'>The newest {len(samples)}.</p>", shown),
    ])
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>")
