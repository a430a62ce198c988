"""Start Argilla's rq worker with the ``sqlsearch`` engine registered.

Runs inside the server venv with the same environment as ``launch_server.py`` (set by the supervisor of
``rlhf label serve start``). The worker runs Argilla's background jobs (record status updates after a
distribution change, dataset import/export, webhooks); jobs that touch the search engine need ``sqlsearch``
registered in this process too, which the import below does before rq forks any job.

It is one plain ``rq.Worker`` on Argilla's queues (``high`` first, then ``default``) with rq's scheduler,
which is what ``python -m argilla_server worker --num-workers 1`` runs minus the pool process around it
(about 200 MB less). SIGTERM makes it finish the current job and exit.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    if not os.environ.get("ARGILLA_REDIS_URL"):
        print("launch_worker: ARGILLA_REDIS_URL is not set; start it with 'rlhf label serve start'", file=sys.stderr)
        return 2
    os.environ.setdefault("ARGILLA_SEARCH_ENGINE", "sqlsearch")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, HERE)

    import argilla_sqlsearch.engine  # noqa: F401  (registers the engine in this process)
    from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE, REDIS_CONNECTION
    from rq import Worker
    from tuning import tune_process

    tune_process()

    print("[launch_worker] starting rq worker on queues high, default", flush=True)
    Worker([HIGH_QUEUE, DEFAULT_QUEUE], connection=REDIS_CONNECTION).work(with_scheduler=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
