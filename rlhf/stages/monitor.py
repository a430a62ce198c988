"""``rlhf monitor``: an HTML report (and its figures as JSON) of the served model over a time window.

Steps, in order:

1. **Open the store** (``store.url``; a missing SQLite file is an error, not a new empty store) and derive the
   ``abandon`` events of conversations that went quiet (``abandon_after_s``).
2. **Baseline** (``baseline.eval_dir``): the reward-model scores that ``rlhf eval`` gave ``baseline.policy``
   (the served checkpoint) in its ``samples.parquet``, read before any model is loaded so a bad path fails fast.
3. **Score** (``reward_model``): every reply of the window without an ``rm_score`` is scored as the eval stage
   scores (:func:`rlhf.models.reward.reward_scores` on the stored conversation and reply, normalised with the
   model's ``reward_stats.json`` when it has one, so the scale is that of the eval's ``score/rm/<name>``) and
   the scores are saved in the store, so each reply is scored once.
4. **Figures**: :func:`rlhf.serving.monitoring.window_summary` over the window (the replies created in it, every
   feedback event they drew so far, the HTTP requests logged in it), the same per category (without the request
   figures: requests carry no category), the drift of the served scores from the baseline's, and the alerts
   (:mod:`rlhf.serving.report`).
5. **Write** ``out`` (HTML) and the figures beside it (``.json``), atomically; print one line with the path and
   the alerts that fired. Alerts do not make the command fail.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlhf.configs.monitor import BaselineSettings, MonitorConfig, ScoringSettings
from rlhf.core.artifacts import atomic_write_json, atomic_write_text
from rlhf.core.errors import UserError

__all__ = ["MonitorConfig", "run_monitor"]

# Request figures: the requests log has no category, so per-category summaries leave these out.
REQUEST_KEYS = ("requests", "errors", "error_rate")


def _default_out(url: str, until: float) -> Path:
    from rlhf.serving.store import store_folder

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(until))
    return store_folder(url) / "monitor" / f"monitor-{stamp}.html"


def _open_store(url: str, scrubber: str):
    from rlhf.serving.store import FeedbackStore

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
        if not path.is_file():
            raise UserError(f"store.url: no feedback store at {path}; point store.url at the store that "
                            "'rlhf serve' writes (its store.url)")
    return FeedbackStore(url, scrubber)


def _shown_url(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _baseline(settings: BaselineSettings) -> tuple[list[tuple[str, float]], dict[str, Any]]:
    """(category, score) of the baseline policy's eval samples, and where they came from."""
    import json
    import math

    import pandas as pd

    folder = Path(settings.eval_dir or "").expanduser()
    samples = folder / "samples.parquet"
    if not samples.is_file():
        raise UserError(f"baseline.eval_dir {folder} holds no samples.parquet; point it at an 'rlhf eval' stage folder")
    frame = pd.read_parquet(samples)
    columns = sorted(c for c in frame.columns if c.startswith("score/rm/"))
    if settings.reward_model is not None:
        column = f"score/rm/{settings.reward_model}"
        if column not in frame.columns:
            names = ", ".join(c.removeprefix("score/rm/") for c in columns) or "none"
            raise UserError(f"baseline.reward_model '{settings.reward_model}' scored nothing in {samples} "
                            f"(reward models there: {names}); fix baseline.reward_model")
    elif len(columns) == 1:
        column = columns[0]
    elif not columns:
        raise UserError(f"{samples} holds no reward-model scores; evaluate with scoring.reward_models or drop "
                        "baseline.eval_dir")
    else:
        names = ", ".join(c.removeprefix("score/rm/") for c in columns)
        raise UserError(f"{samples} holds several reward models ({names}); set baseline.reward_model to one")
    policies = sorted(str(p) for p in frame["policy"].unique())
    if settings.policy not in policies:
        raise UserError(f"baseline.policy '{settings.policy}' is not in {samples} (policies: {', '.join(policies)}); "
                        "fix baseline.policy")
    part = frame[frame["policy"] == settings.policy]
    scores = [(str(c), float(s)) for c, s in zip(part["category"], part[column]) if math.isfinite(float(s))]
    rm_path = None
    results = folder / "results.json"
    if results.is_file():
        card = json.loads(results.read_text(encoding="utf-8")).get("reward_models", {})
        rm_path = card.get(column.removeprefix("score/rm/"), {}).get("model_path")
    return scores, {"eval_dir": str(folder), "policy": settings.policy, "column": column,
                    "baseline_reward_model": rm_path}


def _score(replies: list[dict[str, Any]], reward_model: str, scoring: ScoringSettings) -> tuple[dict[str, float], str]:
    """Reward-model scores of the replies (normalised with ``reward_stats.json`` when the model has one)."""
    from rlhf.eval.sampling import read_reward_stats
    from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path
    from rlhf.models.reward import reward_scores

    try:
        path = resolve_model_path(reward_model)
    except UserError as err:
        raise UserError(f"reward_model {reward_model}: {err}; point reward_model at an 'rlhf train rm' stage folder "
                        "or a reward model folder") from None
    stats = read_reward_stats(path)
    if not replies:
        return {}, path
    model = load_model(path, "reward", dtype=scoring.dtype, device=scoring.device)
    raw = reward_scores(model, load_tokenizer(path), [r["messages"] for r in replies], [r["reply"] for r in replies],
                        batch_size=scoring.batch_size, max_length=getattr(model.config, "max_position_embeddings", None),
                        progress="monitor: scoring")
    scores = [(s - stats["mean"]) / stats["std"] if stats else s for s in raw]
    return {r["id"]: float(s) for r, s in zip(replies, scores)}, path


def run_monitor(cfg: MonitorConfig) -> Path:
    """Write the report of the window; returns the HTML file."""
    from rlhf.serving.monitoring import window_summary
    from rlhf.serving.report import check_alerts, negative_samples, render_monitor_report, rm_drift

    now = time.time()
    until = now if cfg.window.until is None else cfg.window.until
    since = until - cfg.window.since_hours * 3600
    out = Path(cfg.out).expanduser() if cfg.out else _default_out(cfg.store.url, until)

    store = _open_store(cfg.store.url, cfg.store.scrubber)
    baseline, source = _baseline(cfg.baseline) if cfg.baseline.eval_dir else ([], None)
    abandoned = store.derive_abandoned(cfg.abandon_after_s, now=now)

    replies = store.replies(since, until)
    scored: dict[str, float] = {}
    served_rm = None
    if cfg.reward_model:
        scored, served_rm = _score([r for r in replies if r["rm_score"] is None], cfg.reward_model, cfg.scoring)
        store.set_rm_scores(scored)
        for row in replies:
            row["rm_score"] = scored.get(row["id"], row["rm_score"])

    ids = {r["id"] for r in replies}
    feedback = [e for e in store.feedback(since) if e["reply_id"] in ids]
    requests = store.requests(since, until)
    overall = window_summary(replies, feedback, requests)
    categories = {}
    for category in sorted({r["category"] for r in replies}):
        rows = [r for r in replies if r["category"] == category]
        row_ids = {r["id"] for r in rows}
        summary = window_summary(rows, [e for e in feedback if e["reply_id"] in row_ids], [])
        categories[category] = {k: v for k, v in summary.items() if k not in REQUEST_KEYS}

    served = [(r["category"], float(r["rm_score"])) for r in replies if r["rm_score"] is not None]
    drift = None
    if source is not None:
        drift = {**rm_drift(served, baseline), "source": {**source, "served_reward_model": served_rm}}
    thresholds = cfg.alerts.model_dump()
    alerts = check_alerts(overall, drift, thresholds)

    figures = {"window": {"since": since, "until": until, "since_hours": cfg.window.since_hours},
               "store": _shown_url(cfg.store.url), "generated": now, "overall": overall, "categories": categories,
               "drift": drift, "thresholds": thresholds, "alerts": alerts, "scored": len(scored),
               "abandoned_added": abandoned}
    html = render_monitor_report(figures, negative_samples(replies, feedback, cfg.samples),
                                 [s for _, s in served], [s for _, s in baseline])
    atomic_write_text(out, html)
    atomic_write_json(out.with_suffix(".json"), figures)

    fired = [a for a in alerts if a["fired"]]
    said = "; ".join(f"{a['name']} {a['value']:.4g} > {a['threshold']:.4g}" for a in fired) or "none"
    print(f"monitor: {len(replies)} replies in the last {cfg.window.since_hours:g} h -> {out} "
          f"(figures: {out.with_suffix('.json').name}); alerts fired: {said}", flush=True)
    return out
