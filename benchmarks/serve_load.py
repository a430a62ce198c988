"""Load on the served chat API (``rlhf serve`` on Ray Serve): throughput, latency and feedback loss under
concurrent clients.

It starts Ray Serve with :func:`rlhf.stages.serve.start_serve` on the tiny SFT policy of the quickstart and a
fresh SQLite feedback store in a temporary folder, sends one warm-up request, then, for each level of
``--concurrency`` (default 1, 4 and 8), runs that many client threads at once. Each client has its own
``openai.OpenAI`` client (``max_retries=0``, so a failure is counted, never hidden) and sends ``--requests``
single-turn chat requests (demo-world prompts, ``rlhf.world.prompts.generate_prompts``) of at most
``--max-tokens`` tokens, timing each one; after every reply it POSTs a thumbs-up or thumbs-down to
``/v1/feedback`` with an ``event_id`` of its own. Every other client also sends one of its feedback POSTs a
second time with the same ``event_id`` (a client retry), which the store must keep once.

Prints, per level: requests, requests/s and completion tokens/s over the level's wall time (the feedback POSTs
included: a few ms each), p50 and p95 chat latency as the client sees it, feedback events sent (unique
``event_id``; retries not counted), stored (explicit events on the level's replies, read from the store with
:class:`rlhf.serving.store.FeedbackStore`), lost (sent - stored) and duplicated (stored - sent). Exits 1 when
any feedback was lost or duplicated, a retry was not recognised as one, or a chat or feedback call failed.

The model (``--model``) defaults to the SFT stage folder of the last ``make quickstart`` (``runs/quickstart``),
else the SFT policy the test suite trains into ``.cache/test-runs`` (the quickstart's SFT data and epochs;
trained here on first use, a few minutes on 2 CPU cores, reused after). The load average is printed before and
after, with a loud warning when the 1-minute figure is above 1.0 at the start (other work shares the CPUs:
the figures are then floors).

Engines: only the transformers engine exists (``--engine transformers``; CPU, or one GPU per replica); a vLLM
engine and GPU figures wait for a GPU machine. Ray Serve's replicas give the concurrency: one replica
generates one reply at a time, so on CPU more clients mostly add queueing latency unless ``--replicas`` grows
(each replica takes ``--cpus-per-replica`` of the local Ray's CPUs). Example::

    python benchmarks/serve_load.py --requests 8 --max-tokens 48 --replicas 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

API_KEY = "chat-demo-key"  # the default chat key of rlhf serve (auth.chat_keys)
BUSY_LOAD = 1.0
# The SFT policy of tests/conftest.py (the quickstart's SFT data and epochs): trained once per checkout.
TEST_SFT = ["run.root=" + str(REPO / ".cache" / "test-runs"), "run.name=test-policy", "data.demo_examples=3200",
            "train.epochs=2", "train.save_steps=1000", "eval.prompts=48"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_average() -> float:
    return os.getloadavg()[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_policy(model: str | None) -> str:
    """``--model`` as given, else the quickstart's SFT stage folder, else the test suite's SFT policy."""
    if model:
        return model
    quickstart = sorted((REPO / "runs" / "quickstart" / "sft").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if quickstart:
        return str(quickstart[-1].parent)
    os.environ.setdefault("RLHF_CACHE", str(REPO / ".cache" / "test-models"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rlhf.stages import load_config
    from rlhf.stages.sft import run_sft

    print("no quickstart SFT policy under runs/quickstart/sft: using (or training) the test suite's in "
          ".cache/test-runs", flush=True)
    return str(run_sft(load_config(None, TEST_SFT, expect_stage="sft")))


# ------------------------------------------------------------------------------------------- one client
class Client:
    """One simulated client: its own OpenAI client and HTTP connection, and what it measured and sent."""

    def __init__(self, url: str, model: str, level: int, number: int, prompts: list[str], max_tokens: int,
                 retry: bool) -> None:
        self.url, self.model, self.level, self.number = url, model, level, number
        self.prompts, self.max_tokens, self.retry = prompts, max_tokens, retry
        self.latencies_ms: list[float] = []
        self.completion_tokens = 0
        self.reply_ids: list[str] = []
        self.events: set[str] = set()  # unique feedback events sent, as stored: "<event_id>:<kind>"
        self.retries = 0
        self.retry_unflagged = 0  # retries the server did not report as duplicates
        self.errors: list[str] = []

    def run(self) -> None:
        import httpx
        from openai import OpenAI

        client = OpenAI(base_url=self.url + "/v1", api_key=API_KEY, max_retries=0, timeout=600)
        user = f"bench-c{self.level}-{self.number}"
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as http:
            for i, prompt in enumerate(self.prompts):
                started = time.perf_counter()
                try:
                    completion = client.chat.completions.create(
                        model=self.model, messages=[{"role": "user", "content": prompt}], user=user,
                        max_tokens=self.max_tokens)
                except Exception as err:  # noqa: BLE001 - counted and reported, the run goes on
                    self.errors.append(f"chat: {type(err).__name__}: {str(err)[:200]}")
                    continue
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                self.completion_tokens += completion.usage.completion_tokens if completion.usage else 0
                self.reply_ids.append(completion.id)
                rating = "up" if (self.number + i) % 2 == 0 else "down"
                event_id = f"bench-{uuid.uuid4().hex}"
                body = {"reply_id": completion.id, "rating": rating, "event_id": event_id}
                self.events.add(f"{event_id}:thumbs_{rating}")
                for attempt in range(2 if self.retry and i == 0 else 1):
                    try:
                        response = http.post("/v1/feedback", json=body)
                        response.raise_for_status()
                    except Exception as err:  # noqa: BLE001 - a lost event shows in the store count
                        self.errors.append(f"feedback: {type(err).__name__}: {str(err)[:200]}")
                        continue
                    if attempt:
                        self.retries += 1
                        self.retry_unflagged += response.json().get("duplicates") != 1


# ------------------------------------------------------------------------------------------- one level
def run_level(url: str, model: str, store_url: str, level: int, requests: int, max_tokens: int,
              seed: int) -> dict[str, Any]:
    from rlhf.serving.store import FeedbackStore
    from rlhf.world.prompts import generate_prompts

    prompts = [p.text for p in generate_prompts(level * requests, seed=seed + level)]
    clients = [Client(url, model, level, n, prompts[n * requests:(n + 1) * requests], max_tokens, retry=n % 2 == 0)
               for n in range(level)]
    barrier = threading.Barrier(level + 1)

    def work(client: Client) -> None:
        barrier.wait()
        client.run()

    with ThreadPoolExecutor(max_workers=level) as pool:
        futures = [pool.submit(work, c) for c in clients]
        barrier.wait()
        started = time.perf_counter()
        for future in futures:
            future.result()
        wall_s = time.perf_counter() - started

    latencies = [ms for c in clients for ms in c.latencies_ms]
    reply_ids = [r for c in clients for r in c.reply_ids]
    sent = set().union(*(c.events for c in clients))
    rows = [r for r in FeedbackStore(store_url).feedback_of(reply_ids) if r["source"] == "explicit"]
    stored_ids = [r["event_id"] for r in rows]
    return {
        "concurrency": level, "requests": len(latencies), "failed": sum(len(c.errors) for c in clients),
        "errors": [e for c in clients for e in c.errors][:5], "wall_s": wall_s,
        "requests_per_s": len(latencies) / wall_s,
        "tokens_per_s": sum(c.completion_tokens for c in clients) / wall_s,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": percentile(latencies, 0.95),
        "feedback_sent": len(sent), "retries": sum(c.retries for c in clients),
        "retry_unflagged": sum(c.retry_unflagged for c in clients), "feedback_stored": len(rows),
        "lost": max(0, len(sent) - len(rows)), "duplicated": max(0, len(rows) - len(sent)),
        "foreign": len(set(stored_ids) - sent),  # stored events this run never sent (should be none)
    }


def _table(results: list[dict[str, Any]]) -> str:
    header = (f"{'clients':>7} {'requests':>8} {'req/s':>7} {'tok/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'fb sent':>7} {'retries':>7} {'stored':>6} {'lost':>4} {'dup':>4} {'errors':>6}")
    lines = [header]
    for r in results:
        lines.append(f"{r['concurrency']:>7} {r['requests']:>8} {r['requests_per_s']:>7.2f} {r['tokens_per_s']:>7.1f} "
                     f"{r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} {r['feedback_sent']:>7} {r['retries']:>7} "
                     f"{r['feedback_stored']:>6} {r['lost']:>4} {r['duplicated']:>4} {r['failed']:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model.path to serve (default: the quickstart's SFT stage "
                                                      "folder, else the test suite's tiny SFT policy)")
    parser.add_argument("--engine", choices=["transformers"], default="transformers",
                        help="generation engine; only transformers exists (vLLM figures wait for a GPU)")
    parser.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (deployment.num_replicas)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="deployment.num_cpus")
    parser.add_argument("--torch-threads", type=int, default=0, help="deployment.torch_threads (0: torch's default)")
    parser.add_argument("--requests", type=int, default=8, help="chat requests per client")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest reply in tokens")
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated client counts, run one after another")
    parser.add_argument("--port", type=int, default=None, help="HTTP port of Serve (default: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="prompt seed")
    args = parser.parse_args(argv)
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--concurrency takes comma-separated integers, not {args.concurrency!r}")
    if not levels or min(levels) < 1 or args.requests < 1 or args.replicas < 1:
        parser.error("--concurrency levels, --requests and --replicas must be at least 1")

    load_before = load_average()
    print(f"load average before: {load_before:.2f} on {os.cpu_count()} CPUs", flush=True)
    if load_before > BUSY_LOAD:
        bar = "!" * 100
        print(f"{bar}\nWARNING: the machine is busy (1-minute load average {load_before:.2f} > {BUSY_LOAD}): other "
              "work shares the CPUs, so these figures are floors, not idle figures; measure again on an idle "
              f"machine\n{bar}", flush=True)

    from rlhf.stages import load_config
    from rlhf.stages.serve import served_path, start_serve, stop_serve

    policy = find_policy(args.model)
    home = Path(tempfile.mkdtemp(prefix="rlhf-serve-bench-"))
    store_url = f"sqlite:///{home / 'feedback.db'}"
    port = args.port or _free_port()
    ray_cpus = max(2, int(-(-args.replicas * args.cpus_per_replica // 1)))
    cfg = load_config(None, [
        f"model.path={policy}", f"model.engine={args.engine}", f"store.url={store_url}", f"http.port={port}",
        f"deployment.num_replicas={args.replicas}", f"deployment.num_cpus={args.cpus_per_replica}",
        f"deployment.torch_threads={args.torch_threads}", f"deployment.max_ongoing_requests={max(8, max(levels))}",
        f"limits.max_tokens={max(256, args.max_tokens)}", "limits.requests_per_minute=1000000",
        f"ray.num_cpus={ray_cpus}"], expect_stage="serve")

    # Serve's per-request access log goes to its log files only: printed through the driver it would flood the
    # output and take CPU from the replicas (applies to the local Ray started here).
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    results: list[dict[str, Any]] = []
    try:
        started = time.perf_counter()
        url = start_serve(cfg)
        start_s = time.perf_counter() - started
        print(f"serving {served_path(policy)} at {url} ({args.engine} engine, CPU, {args.replicas} replica(s)); "
              f"started in {start_s:.1f} s; store {store_url}", flush=True)
        warm = Client(url, cfg.model.name, 0, 0, ["Hello, where is my order?"], args.max_tokens, retry=False)
        warm.run()  # the first request pays for lazy initialisation: keep it out of the figures
        if warm.errors:
            raise RuntimeError(f"the warm-up request failed: {warm.errors[0]}")
        for level in levels:
            results.append(run_level(url, cfg.model.name, store_url, level, args.requests, args.max_tokens, args.seed))
            r = results[-1]
            print(f"  {level} client(s): {r['requests']} requests in {r['wall_s']:.1f} s", flush=True)
    finally:  # Serve down even after an error (a failed start may have left a half-deployed app)
        import ray

        if ray.is_initialized():
            try:
                stop_serve()
            except Exception as err:  # noqa: BLE001 - Ray's shutdown below removes what is left
                print(f"stopping Serve: {type(err).__name__}: {err}", file=sys.stderr)
            ray.shutdown()
        shutil.rmtree(home, ignore_errors=True)

    print(f"\nserve load ({args.engine} engine on CPU, {args.replicas} replica(s), {args.requests} requests per client, "
          f"max_tokens {args.max_tokens})")
    print(_table(results))
    load_after = load_average()
    print(f"load average after: {load_after:.2f} (before: {load_before:.2f})")
    if max(load_before, load_after) > BUSY_LOAD:
        print(f"WARNING: the machine was busy (load average above {BUSY_LOAD}): these figures are floors")
    print("GPU (vLLM) figures: not measured; they wait for a GPU machine")

    failed = False
    for r in results:
        problems = []
        if r["lost"] or r["duplicated"] or r["foreign"]:
            problems.append(f"feedback lost {r['lost']}, duplicated {r['duplicated']}, foreign {r['foreign']}")
        if r["retry_unflagged"]:
            problems.append(f"{r['retry_unflagged']} retried feedback POST(s) not reported as duplicates")
        if r["failed"]:
            problems.append(f"{r['failed']} failed HTTP call(s) (chat or feedback), e.g. {r['errors'][0]}")
        if problems:
            failed = True
            print(f"FAIL at {r['concurrency']} client(s): " + "; ".join(problems))
    print("feedback: every event stored exactly once" if not failed else "FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
