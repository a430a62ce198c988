"""Two annotators label a 5,000-record dataset at the same time: nothing is lost, nothing is duplicated.

Each annotator client works like a person in the UI: it takes the first page of its queue (pending records
it has not answered, in its own stable order) and submits each record with ``submit_response`` (the UI's
``POST /records/{id}/responses``). Every 25th record is submitted twice at once from a second thread (a
double click, a second tab, a client retrying after a timeout), which provokes Argilla's duplicate-submit race
(HTTP 500) or its 409; ``submit_response`` resolves both into one response.

The dataset needs one submission per record (``min_submitted=1``), so the two annotators split the records;
near the end both may answer the same record, which is allowed (two users). At the end: every record is
completed, each (user, record) pair has exactly one response, every response holds the values its client
sent, and the responses match the clients' own count of successful submissions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlhf.labeling import iter_records, log_records, pending_queue, ranking_value, submit_response

pytestmark = pytest.mark.slow

RECORDS = 5000
SLOTS = ["response_1", "response_2", "response_3", "response_4"]


def answer_for(username: str, external_id: str) -> dict:
    """The ranking a client gives a record: a deterministic function of the user and the record."""
    seed = sum(map(ord, username + external_id))
    order = SLOTS[seed % 4:] + SLOTS[:seed % 4]
    return {"ranking": {"value": ranking_value(order)}}


def annotate(live, api_key: str, username: str, dataset_id: str, log: list[tuple[str, str, str]],
             lock: threading.Lock) -> None:
    """Work through the queue until it is empty; record (external_id, record_id, outcome) of each submission."""
    http = live.http(api_key)
    with ThreadPoolExecutor(max_workers=1) as second_tab:
        while True:
            page, _total = pending_queue(http, dataset_id, limit=50)
            if not page:
                return
            for index, record in enumerate(page):
                values = answer_for(username, record["external_id"])
                double = second_tab.submit(submit_response, http, record["id"], values) if index % 25 == 0 else None
                results = [submit_response(http, record["id"], values)] + ([double.result()] if double else [])
                with lock:
                    log.extend((record["external_id"], record["id"], r.outcome) for r in results)


def test_two_annotators_lose_and_duplicate_nothing(labeling_service):
    live = labeling_service
    owner = live.http()
    from rlhf.labeling import create_dataset, load_template

    workspace = "concurrency"
    dataset_id = create_dataset(owner, load_template("ranking-v1"), "concurrency-5000", workspace, min_submitted=1)
    records = [{"external_id": f"c{i}", "fields": {"prompt": f"prompt {i}", **{s: f"{s} of {i}" for s in SLOTS}}}
               for i in range(RECORDS)]
    started = time.monotonic()
    log_records(owner, dataset_id, records)
    logged_s = time.monotonic() - started

    users = [live.new_user("conc-a", workspace), live.new_user("conc-b", workspace)]
    logs: dict[str, list[tuple[str, str, str]]] = {u.user.username: [] for u in users}
    lock = threading.Lock()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(annotate, live, u.api_key, u.user.username, dataset_id, logs[u.user.username], lock)
                   for u in users]
        for future in futures:
            future.result()
    annotated_s = time.monotonic() - started

    stored = list(iter_records(owner, dataset_id, include="responses"))
    assert len(stored) == RECORDS
    by_id = {u.user.id: u.user.username for u in users}
    pairs = Counter((r["external_id"], by_id[resp["user_id"]]) for r in stored for resp in r["responses"])
    duplicated = [pair for pair, count in pairs.items() if count > 1]
    lost = [r["external_id"] for r in stored if not any(x["status"] == "submitted" for x in r["responses"])]
    assert duplicated == [] and lost == []
    for record in stored:  # each stored response holds exactly what its client sent
        for response in record["responses"]:
            assert response["status"] == "submitted"
            assert response["values"] == answer_for(by_id[response["user_id"]], record["external_id"])
    for username, entries in logs.items():  # the clients' own count of records matches what was stored
        sent = {ext for ext, _, _ in entries}
        assert sent == {ext for (ext, user) in pairs if user == username}
        outcomes = Counter(outcome for _, _, outcome in entries)
        assert outcomes["created"] == len(sent)  # one POST won for each record ...
        assert outcomes["upserted"] == len(entries) - len(sent) > 0  # ... the double was resolved, not lost
    progress = owner.get(f"/api/v1/datasets/{dataset_id}/progress")
    assert (progress["total"], progress["completed"], progress["pending"]) == (RECORDS, RECORDS, 0)
    overlap = sum(1 for r in stored if len(r["responses"]) == 2)
    print(f"\nconcurrency: logged {RECORDS} records in {logged_s:.1f}s; two annotators submitted "
          f"{sum(len(v) for v in logs.values())} times ({overlap} records answered by both) in {annotated_s:.1f}s")
