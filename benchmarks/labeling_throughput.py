"""Throughput of the embedded labeling service: records logged per second and the annotator queue's latency.

For each backend (``--backends sqlite,postgresql``) it starts a service of its own in a temporary home,
creates a ``ranking-v1`` dataset, logs ``--records`` records (500 per request), probes the queue page alone
(one annotator, ``--probe`` requests one after the other), then runs ``--annotators`` simulated annotators
at once. Each works like a person in the UI: fetch the first page of its queue (pending records it has not
answered, in its own order: the request whose latency the UI feels), submit each record with
``submit_response``, repeat until the queue is empty. Finally exports every record with its responses.

PostgreSQL is ``--database-url`` when given (an empty database the service may own), else a throwaway
cluster started here from PostgreSQL's server binaries (``initdb``/``pg_ctl``, ``apt-get install -y
postgresql``; run as user ``postgres`` when the benchmark runs as root), with the server's defaults
(``fsync`` on), removed at the end.

Prints, per backend: records/s logged, responses/s submitted, queue and submit latency (p50/p95) as the
client sees it and as the server measured it (Argilla's ``Server-Timing`` header), the CPU time each
operation cost the server (and the PostgreSQL cluster started here), export records/s and the server's
memory. The load average is printed before and after, with a warning when it is above 1.0 (other work on
the machine: the figures are then floors). ``--json`` prints one JSON object per backend. Example::

    python benchmarks/labeling_throughput.py --records 5000 --annotators 2 --backends sqlite,postgresql
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.labeling import (
    ServiceConfig,
    create_dataset,
    create_user,
    http_client,
    iter_records,
    load_template,
    log_records,
    ranking_value,
    resolve_connection,
    start_service,
    stop_service,
    submit_response,
)
from rlhf.labeling.config import ArgillaConfig
from rlhf.labeling.http import ArgillaHTTP

SLOTS = ["response_1", "response_2", "response_3", "response_4"]
BACKENDS = ("sqlite", "postgresql")
BUSY_LOAD = 1.0
QUEUE_FILTER = {"filters": {"and": [
    {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
    {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]},
]}}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------------------------------------- CPU accounting
def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its live descendants (Linux ``/proc``; 0 elsewhere)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(entry).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.split("/")[2])
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


class CpuMeter:
    """CPU seconds spent by named process trees between two readings."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots

    def read(self) -> dict[str, float]:
        return {name: _tree_cpu_s(pid) for name, pid in self.roots.items()}

    def per(self, before: dict[str, float], count: int) -> dict[str, float]:
        """Milliseconds of CPU per operation, by process tree, since ``before``."""
        after = self.read()
        return {name: round((after[name] - before[name]) / max(count, 1) * 1000, 3) for name in after}


# ------------------------------------------------------------------------------------------- PostgreSQL
def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise SystemExit(f"PostgreSQL's {name} is not installed: run 'apt-get install -y postgresql' "
                         "or pass --database-url")
    return found


@contextmanager
def throwaway_postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL cluster on 127.0.0.1 for one run: (database URL, postmaster pid)."""
    root = Path(tempfile.mkdtemp(prefix="rlhf-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), root / "data"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, timeout=120)

    run(_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256")
    run(_pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    try:
        for sql in ("CREATE ROLE argilla LOGIN PASSWORD 'bench-pw'", "CREATE DATABASE argilla OWNER argilla"):
            run(_pg_bin("psql"), "-h", str(root), "-p", str(port), "-U", "postgres", "-c", sql)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        yield f"postgresql://argilla:bench-pw@127.0.0.1:{port}/argilla", pid
    finally:
        subprocess.run([*as_user, _pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------- annotators
def queue_page(http: ArgillaHTTP, dataset_id: str, limit: int) -> tuple[list[dict[str, Any]], float]:
    """The annotator's first queue page (what ``pending_queue`` asks) and the server's own time in ms."""
    response = http.request("POST", f"/api/v1/me/datasets/{dataset_id}/records/search", json=QUEUE_FILTER,
                            params={"limit": limit, "offset": 0}, idempotent=True)
    timing = response.headers.get("server-timing", "")
    server_ms = float(timing.split("dur=")[1]) if "dur=" in timing else float("nan")
    return [item["record"] for item in response.json()["items"]], server_ms


def annotate(api_url: str, api_key: str, dataset_id: str, page: int, record: Callable[[str, float], None]) -> int:
    """One simulated annotator: work through the queue; returns how many records it submitted."""
    done = 0
    with ArgillaHTTP(api_url, api_key) as http:
        while True:
            started = time.perf_counter()
            records, server_ms = queue_page(http, dataset_id, page)
            record("queue", (time.perf_counter() - started) * 1000)
            record("queue_server", server_ms)
            if not records:
                return done
            for item in records:
                order = SLOTS[done % 4:] + SLOTS[:done % 4]
                started = time.perf_counter()
                submit_response(http, item["id"], {"ranking": {"value": ranking_value(order)}})
                record("submit", (time.perf_counter() - started) * 1000)
                done += 1


def _latency(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 1) if values else float("nan"),
            "p95": round(percentile(values, 0.95), 1)}


# ------------------------------------------------------------------------------------------- one backend
def run(records: int, annotators: int, page: int, probe: int, server_workers: int, database_url: str | None,
        database_pid: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rlhf-label-bench-") as home:
        config = ServiceConfig(home=home, port=_free_port(), server_workers=server_workers,
                               database_url=database_url, start_timeout_s=300)
        started = time.perf_counter()
        status = start_service(config)
        start_s = time.perf_counter() - started
        roots = {"server": status.pids["server"]}
        if database_pid is not None:
            roots["postgres"] = database_pid
        meter = CpuMeter(roots)
        try:
            connection = resolve_connection(ArgillaConfig(), config)
            with http_client(connection) as owner:
                dataset_id = create_dataset(owner, load_template("ranking-v1"), "throughput", "bench")
                rows = [{"external_id": f"b{i}", "fields": {"prompt": f"Prompt number {i}: explain item {i}.",
                                                             **{s: f"{s} answer to prompt {i}" for s in SLOTS}}}
                        for i in range(records)]
                before, started = meter.read(), time.perf_counter()
                log_records(owner, dataset_id, rows)
                log_s = time.perf_counter() - started
                log_cpu = meter.per(before, records)
                users = [create_user(owner, f"bench-{i}", workspaces=("bench",)) for i in range(annotators)]

                probe_ms: list[float] = []
                probe_server_ms: list[float] = []
                with ArgillaHTTP(connection.api_url, users[0].api_key) as http:
                    queue_page(http, dataset_id, page)  # warm the connection and the server's caches
                    before = meter.read()
                    for _ in range(probe):
                        started = time.perf_counter()
                        _, server_ms = queue_page(http, dataset_id, page)
                        probe_ms.append((time.perf_counter() - started) * 1000)
                        probe_server_ms.append(server_ms)
                    probe_cpu = meter.per(before, probe)

                samples: dict[str, list[float]] = {"queue": [], "queue_server": [], "submit": []}
                lock = threading.Lock()

                def record(kind: str, value: float) -> None:
                    with lock:
                        samples[kind].append(value)

                before, started = meter.read(), time.perf_counter()
                with ThreadPoolExecutor(max_workers=annotators) as pool:
                    counts = list(pool.map(lambda u: annotate(connection.api_url, u.api_key, dataset_id, page,
                                                              record), users))
                annotate_s = time.perf_counter() - started
                submitted = sum(counts)
                annotate_cpu = meter.per(before, submitted)

                started = time.perf_counter()
                exported = sum(1 for _ in iter_records(owner, dataset_id, include="responses"))
                export_s = time.perf_counter() - started
                memory = owner.get("/api/v1/status")["memory"]["rss"]
        finally:
            stop_service(config)
    return {
        "backend": "postgresql" if database_url else "sqlite",
        "records": records,
        "annotators": annotators,
        "server_workers": server_workers,
        "service_start_s": round(start_s, 1),
        "logged_records_per_s": round(records / log_s, 1),
        "log_cpu_ms_per_record": log_cpu,
        "queue_alone_ms": _latency(probe_ms),
        "queue_alone_server_ms": _latency(probe_server_ms),
        "queue_alone_cpu_ms_per_page": probe_cpu,
        "submitted_responses": submitted,
        "submitted_responses_per_s": round(submitted / annotate_s, 1),
        "queue_ms": _latency(samples["queue"]),
        "queue_server_ms": _latency(samples["queue_server"]),
        "submit_ms": _latency(samples["submit"]),
        "annotate_cpu_ms_per_response": annotate_cpu,
        "exported_records_per_s": round(exported / export_s, 1),
        "server_rss": memory,
        "url": status.url,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f} ms" for name, value in cpu.items())


def report(result: dict[str, Any]) -> None:
    lat = "{p50:>8} ms p50, {p95} ms p95"
    print(f"labeling throughput ({result['backend']}, {result['server_workers']} server worker(s), "
          f"{result['annotators']} annotators, {result['records']} records)")
    print(f"  service start           {result['service_start_s']:>8} s")
    print(f"  records logged          {result['logged_records_per_s']:>8} records/s "
          f"(CPU per record: {_cpu_text(result['log_cpu_ms_per_record'])})")
    print(f"  queue page, alone       {lat.format(**result['queue_alone_ms'])} "
          f"(server {result['queue_alone_server_ms']['p50']} ms p50; CPU per page: "
          f"{_cpu_text(result['queue_alone_cpu_ms_per_page'])})")
    print(f"  responses submitted     {result['submitted_responses_per_s']:>8} responses/s "
          f"({result['submitted_responses']} in all; CPU per response, its queue pages included: "
          f"{_cpu_text(result['annotate_cpu_ms_per_response'])})")
    print(f"  annotator queue latency {lat.format(**result['queue_ms'])} "
          f"(server {result['queue_server_ms']['p50']} ms p50, {result['queue_server_ms']['p95']} ms p95)")
    print(f"  submit latency          {lat.format(**result['submit_ms'])}")
    print(f"  export with responses   {result['exported_records_per_s']:>8} records/s")
    print(f"  server memory (RSS)     {result['server_rss']:>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="records to log")
    parser.add_argument("--annotators", type=int, default=2, help="simulated annotators working at once")
    parser.add_argument("--page", type=int, default=50, help="queue page size each annotator fetches")
    parser.add_argument("--probe", type=int, default=30, help="queue pages fetched alone before annotating")
    parser.add_argument("--server-workers", type=int, default=ServiceConfig().server_workers,
                        help="uvicorn worker processes of the server (default: the service's default)")
    parser.add_argument("--backends", default="sqlite",
                        help="comma-separated backends to measure, one after the other: sqlite, postgresql")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL for the postgresql backend (default: a throwaway local cluster)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per backend")
    args = parser.parse_args(argv)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if args.database_url and "postgresql" not in backends:
        backends = ["postgresql"] if backends == ["sqlite"] else [*backends, "postgresql"]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(f"--backends takes {', '.join(BACKENDS)}, not {', '.join(unknown) or 'nothing'}")

    load_before = load_average()
    print(f"load average before: {load_before:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    for backend in backends:
        backend_load = load_average()
        if backend == "sqlite":
            result = run(args.records, args.annotators, args.page, args.probe, args.server_workers, None, None)
        elif args.database_url:
            result = run(args.records, args.annotators, args.page, args.probe, args.server_workers,
                         args.database_url, None)
        else:
            with throwaway_postgres() as (url, pid):
                result = run(args.records, args.annotators, args.page, args.probe, args.server_workers, url, pid)
        result["load_average_before"] = round(backend_load, 2)
        result["load_average_after"] = round(load_average(), 2)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            report(result)
            print(f"  load average            {result['load_average_before']:>8} before, "
                  f"{result['load_average_after']} after", flush=True)
    load_after = load_average()
    print(f"load average after: {load_after:.2f}", file=sys.stderr)
    if max(load_before, load_after) > BUSY_LOAD:
        print(f"WARNING: the machine was busy (load average above {BUSY_LOAD}): other work shared the CPUs, so "
              "these figures are floors; measure again on an idle machine", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
