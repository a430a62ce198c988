"""``rlhf serve``: a checkpoint behind an OpenAI-compatible API on Ray Serve (:mod:`rlhf.serving`), with the
feedback store, guardrails and Prometheus metrics. Runs until interrupted; :func:`start_serve` is the
non-blocking part that tests and the load benchmark use.
"""

from __future__ import annotations

import time

from rlhf.configs.serve import ServeConfig
from rlhf.core.cluster import connect_ray

__all__ = ["run_serve", "start_serve", "stop_serve"]


def start_serve(cfg: ServeConfig) -> str:
    """Connect to (or start) Ray, deploy the app and wait until it answers; returns its base URL."""
    from rlhf.serving.deployment import start

    connect_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)
    return start(cfg.sections(), cfg.http)


def stop_serve() -> None:
    from rlhf.serving.deployment import stop

    stop()


def run_serve(cfg: ServeConfig) -> None:
    url = start_serve(cfg)
    print(f"serving {cfg.model.name} ({cfg.model.path}) at {url}/v1 (OpenAI API; feedback at {url}/v1/feedback, "
          f"metrics at {url}/metrics, store {cfg.store.url}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        stop_serve()
