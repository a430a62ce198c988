"""Throughput of the embedded labeling service: records logged per second and the annotator queue's latency.

Starts a service of its own in a temporary home (SQLite, or PostgreSQL with ``--database-url``), creates a
``ranking-v1`` dataset, logs ``--records`` records (500 per request), then runs ``--annotators`` simulated
annotators at once. Each works like a person in the UI: fetch the first page of its queue (pending records
it has not answered, in its own order: the request whose latency the UI feels), submit each record with
``submit_response``, repeat until the queue is empty. Finally exports every record with its responses.

Prints records/s logged, responses/s submitted, queue and submit latency (p50/p95), export records/s and the
server's memory; ``--json`` prints the same as one JSON object. Example::

    python benchmarks/labeling_throughput.py --records 5000 --annotators 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.labeling import (
    ServiceConfig,
    create_dataset,
    create_user,
    http_client,
    iter_records,
    load_template,
    log_records,
    pending_queue,
    ranking_value,
    resolve_connection,
    start_service,
    stop_service,
    submit_response,
)
from rlhf.labeling.config import ArgillaConfig

SLOTS = ["response_1", "response_2", "response_3", "response_4"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def annotate(api_url: str, api_key: str, dataset_id: str, page: int, queue_ms: list[float],
             submit_ms: list[float], lock: threading.Lock) -> int:
    """One simulated annotator: work through the queue; returns how many records it submitted."""
    from rlhf.labeling import ArgillaHTTP

    done = 0
    with ArgillaHTTP(api_url, api_key) as http:
        while True:
            started = time.perf_counter()
            records, _total = pending_queue(http, dataset_id, limit=page)
            with lock:
                queue_ms.append((time.perf_counter() - started) * 1000)
            if not records:
                return done
            for record in records:
                order = SLOTS[done % 4:] + SLOTS[:done % 4]
                started = time.perf_counter()
                submit_response(http, record["id"], {"ranking": {"value": ranking_value(order)}})
                with lock:
                    submit_ms.append((time.perf_counter() - started) * 1000)
                done += 1


def run(records: int, annotators: int, page: int, server_workers: int, database_url: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlhf-label-bench-") as home:
        config = ServiceConfig(home=home, port=_free_port(), server_workers=server_workers,
                               database_url=database_url, start_timeout_s=300)
        started = time.perf_counter()
        status = start_service(config)
        start_s = time.perf_counter() - started
        try:
            connection = resolve_connection(ArgillaConfig(), config)
            with http_client(connection) as owner:
                dataset_id = create_dataset(owner, load_template("ranking-v1"), "throughput", "bench")
                rows = [{"external_id": f"b{i}", "fields": {"prompt": f"Prompt number {i}: explain item {i}.",
                                                             **{s: f"{s} answer to prompt {i}" for s in SLOTS}}}
                        for i in range(records)]
                started = time.perf_counter()
                log_records(owner, dataset_id, rows)
                log_s = time.perf_counter() - started
                users = [create_user(owner, f"bench-{i}", workspaces=("bench",)) for i in range(annotators)]

                queue_ms: list[float] = []
                submit_ms: list[float] = []
                lock = threading.Lock()
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=annotators) as pool:
                    counts = list(pool.map(lambda u: annotate(connection.api_url, u.api_key, dataset_id, page,
                                                              queue_ms, submit_ms, lock), users))
                annotate_s = time.perf_counter() - started

                started = time.perf_counter()
                exported = sum(1 for _ in iter_records(owner, dataset_id, include="responses"))
                export_s = time.perf_counter() - started
                memory = owner.get("/api/v1/status")["memory"]["rss"]
        finally:
            stop_service(config)
    return {
        "records": records,
        "annotators": annotators,
        "server_workers": server_workers,
        "backend": "postgresql" if database_url else "sqlite",
        "service_start_s": round(start_s, 1),
        "logged_records_per_s": round(records / log_s, 1),
        "submitted_responses": sum(counts),
        "submitted_responses_per_s": round(sum(counts) / annotate_s, 1),
        "queue_latency_ms_p50": round(statistics.median(queue_ms), 1),
        "queue_latency_ms_p95": round(percentile(queue_ms, 0.95), 1),
        "submit_latency_ms_p50": round(statistics.median(submit_ms), 1),
        "submit_latency_ms_p95": round(percentile(submit_ms, 0.95), 1),
        "exported_records_per_s": round(exported / export_s, 1),
        "server_rss": memory,
        "url": status.url,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records to log")
    parser.add_argument("--annotators", type=int, default=2, help="simulated annotators working at once")
    parser.add_argument("--page", type=int, default=50, help="queue page size each annotator fetches")
    parser.add_argument("--server-workers", type=int, default=ServiceConfig().server_workers,
                        help="uvicorn worker processes of the server (default: the service's default)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in the temp home)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args.records, args.annotators, args.page, args.server_workers, args.database_url)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"labeling throughput ({result['backend']}, {result['server_workers']} server worker(s), "
          f"{result['annotators']} annotators, {result['records']} records)")
    print(f"  service start           {result['service_start_s']:>8} s")
    print(f"  records logged          {result['logged_records_per_s']:>8} records/s")
    print(f"  responses submitted     {result['submitted_responses_per_s']:>8} responses/s "
          f"({result['submitted_responses']} in all)")
    print(f"  annotator queue latency {result['queue_latency_ms_p50']:>8} ms p50, {result['queue_latency_ms_p95']} ms p95")
    print(f"  submit latency          {result['submit_latency_ms_p50']:>8} ms p50, {result['submit_latency_ms_p95']} ms p95")
    print(f"  export with responses   {result['exported_records_per_s']:>8} records/s")
    print(f"  server memory (RSS)     {result['server_rss']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
