"""``rlhf feedback export|forget``: a window of served feedback becomes the next round's prompts file
(:mod:`rlhf.serving.export`), or a user's data is erased from the store with the exports made from it marked.
"""

from __future__ import annotations

import time
from pathlib import Path

from rlhf.configs.serve import FeedbackConfig
from rlhf.core.errors import UserError

__all__ = ["run_export", "run_forget"]


def _default_out(cfg: FeedbackConfig, until: float) -> Path:
    from rlhf.serving.store import store_folder

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(until))
    return store_folder(cfg.store.url) / "exports" / f"feedback-{stamp}.jsonl"


def run_export(cfg: FeedbackConfig) -> Path:
    from rlhf.serving.export import export_rows, write_export
    from rlhf.serving.store import FeedbackStore

    store = FeedbackStore(cfg.store.url, cfg.store.scrubber)
    until = time.time() if cfg.export.until is None else cfg.export.until
    since = until - cfg.export.since_hours * 3600
    rows = export_rows(store, since, until, abandon_after_s=cfg.abandon_after_s)
    out = Path(cfg.export.out) if cfg.export.out else _default_out(cfg, until)
    write_export(store, rows, out, since, until)
    signals: dict[str, int] = {}
    for row in rows:
        for kind, n in row["metadata"]["signals"].items():
            signals[kind] = signals.get(kind, 0) + n
    print(f"exported {len(rows)} prompts ({', '.join(f'{k} {v}' for k, v in sorted(signals.items())) or 'no signals'})"
          f" to {out}; use it as prepare source.path (kind: file) or generate prompts.path", flush=True)
    return out


def run_forget(cfg: FeedbackConfig) -> dict:
    from rlhf.serving.store import FeedbackStore

    if not cfg.user:
        raise UserError("name the user to forget: rlhf feedback forget USER")
    store = FeedbackStore(cfg.store.url, cfg.store.scrubber)
    result = store.forget(cfg.user)
    exports = ", ".join(result["exports"]) or "none"
    print(f"forgot {cfg.user!r}: {result['replies']} replies and {result['feedback']} feedback events erased; "
          f"exports holding their data (marked in the store; delete or re-export them): {exports}", flush=True)
    return result
