"""``rlhf serve``: a checkpoint behind an OpenAI-compatible API on Ray Serve (:mod:`rlhf.serving`), with the
feedback store, guardrails and Prometheus metrics. Runs until interrupted; :func:`start_serve` is the
non-blocking part that tests and the load benchmark use.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from rlhf.configs.serve import ServeConfig
from rlhf.core.cluster import connect_ray
from rlhf.core.errors import UserError

__all__ = ["run_serve", "served_path", "start_serve", "stop_serve"]


def served_path(path: str) -> str:
    """``model.path`` as given, or, for a pipeline's run root (it holds ``pipeline-summary.json``), the best
    policy of its last round."""
    summary_file = Path(path).expanduser() / "pipeline-summary.json"
    if not summary_file.is_file():
        return path
    last = json.loads(summary_file.read_text())["rounds"][-1]
    best = last["policies"].get(last["best"])
    if best is None:
        raise UserError(f"{path}: round {last['round']} kept its starting policy '{last['best']}' (no trained policy "
                        "beat it); set model.path to that policy's folder")
    return best


def start_serve(cfg: ServeConfig) -> str:
    """Connect to (or start) Ray, deploy the app and wait until it answers; returns its base URL."""
    from rlhf.serving.deployment import start

    sections = cfg.sections()
    sections["model"]["path"] = served_path(cfg.model.path)
    connect_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)
    return start(sections, cfg.http)


def stop_serve() -> None:
    from rlhf.serving.deployment import stop

    stop()


def _exit_on_sigterm(_signum, _frame) -> None:
    raise SystemExit(0)


def run_serve(cfg: ServeConfig) -> None:
    url = start_serve(cfg)
    # After ray.init (which installs its own handler): `kill`, docker stop, systemd remove the app on the way out.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    print(f"serving {cfg.model.name} ({served_path(cfg.model.path)}) at {url}/v1 (OpenAI API; feedback at {url}/v1/feedback, "
          f"metrics at {url}/metrics, store {cfg.store.url}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        stop_serve()
        print("stopped serving", flush=True)
