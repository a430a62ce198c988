"""Submitting responses and reading them back exactly, through Argilla's REST API.

Submitting as an annotator (``submit_response``): ``POST /api/v1/records/{id}/responses``, what the UI does.
Argilla checks for an existing response and then inserts, so the same user submitting the same record twice
at once (two tabs, a client retry after a timeout) makes one request fail with HTTP 500 (a unique-constraint
violation), and a later duplicate gets 409. Both mean "this user already has a response for this record";
the function then writes the values with the bulk endpoint ``POST /api/v1/me/responses/bulk``, which
upserts on (record, user). The result is one response holding the values sent, whatever the interleaving.
SQLite's "database is locked" (HTTP 500, the transaction rolled back) and a POST whose outcome is unknown
(connection reset after sending) are sent again with back-off: either the first took no effect, or the
repeat gets the 409 above.
``submit_responses`` sends many through that upsert directly (100 per request, Argilla's limit).

Reading (``iter_records``, ``ranking_of``): the SDK keeps only the values of a ranking answer and loses the
ranks, and the UI stores a ranking in option order with a ``rank`` on each item. Read the raw records
(``include=responses``, owner or admin key) and sort by ``rank``; equal ranks are ties, returned as one group.

A discard must carry ``values: {}``, not nothing: a NULL value breaks later SDK reads of the record.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rlhf.core.errors import UserError
from rlhf.labeling.http import ArgillaAPIError, ArgillaHTTP, OutcomeUnknownError

__all__ = [
    "SubmitResult",
    "iter_records",
    "pending_queue",
    "ranking_of",
    "ranking_value",
    "submit_response",
    "submit_responses",
]

STATUSES = ("submitted", "draft", "discarded")
BULK_LIMIT = 100
BUSY_RETRIES = 5
LOCKED = "database is locked"  # SQLite's answer while another transaction writes
PAGE = 1000


@dataclass(frozen=True)
class SubmitResult:
    """How a submission ended: ``created`` (first POST won) or ``upserted`` (after a duplicate answer)."""

    record_id: str
    outcome: str


def ranking_value(order: list[str] | list[list[str]]) -> list[dict[str, Any]]:
    """A ranking answer in the form the API takes: ``[{"value": v, "rank": r}, ...]``.

    ``order`` lists option values best first; an inner list groups tied values under one rank.
    """
    items: list[dict[str, Any]] = []
    for rank, entry in enumerate(order, start=1):
        for value in ([entry] if isinstance(entry, str) else entry):
            items.append({"value": value, "rank": rank})
    return items


def ranking_of(response_values: dict[str, Any], question: str) -> list[list[str]]:
    """The ranking answered to ``question``, best first; tied options share a group. [] when unanswered."""
    answer = (response_values or {}).get(question, {}).get("value") or []
    groups: dict[int, list[str]] = {}
    for item in answer:
        groups.setdefault(int(item["rank"]), []).append(str(item["value"]))
    return [sorted(groups[rank]) for rank in sorted(groups)]


def _is_duplicate(err: ArgillaAPIError) -> bool:
    if err.status == 409:
        return True
    text = str(err.detail)
    return err.status == 500 and ("IntegrityError" in text or "UNIQUE" in text.upper())


def _is_busy(err: ArgillaAPIError) -> bool:
    """SQLite's "database is locked": the server rolled the transaction back, so sending it again is safe."""
    return err.status == 500 and LOCKED in str(err.detail)


def _check(status: str, values: dict[str, Any] | None) -> dict[str, Any]:
    if status not in STATUSES:
        raise UserError(f"response status '{status}' is not one of {', '.join(STATUSES)}")
    if values is None:
        if status != "discarded":
            raise UserError(f"a '{status}' response needs values")
        return {}
    return values


def submit_response(http: ArgillaHTTP, record_id: str, values: dict[str, Any] | None,
                    status: str = "submitted") -> SubmitResult:
    """Submit the key's user's response to ``record_id``; duplicates (409, or the 500 race) become an upsert."""
    values = _check(status, values)
    body = {"values": values, "status": status}
    for attempt in range(BUSY_RETRIES + 1):
        try:
            http.post(f"/api/v1/records/{record_id}/responses", json=body)
            return SubmitResult(record_id, "created")
        except ArgillaAPIError as err:
            if _is_duplicate(err):
                break
            if not _is_busy(err) or attempt == BUSY_RETRIES:
                raise
        except OutcomeUnknownError:
            if attempt == BUSY_RETRIES:  # sending it again is safe: if it took effect, the answer is 409
                raise
        time.sleep(0.05 * 2**attempt)
    submit_responses(http, [(record_id, values, status)])
    return SubmitResult(record_id, "upserted")


def submit_responses(http: ArgillaHTTP, items: list[tuple[str, dict[str, Any] | None, str]]) -> int:
    """Upsert the key's user's responses, given as (record_id, values, status); returns how many were written.

    The server answers a bulk request item by item; items that met SQLite's "database is locked" are sent
    again (an upsert is idempotent), any other refusal is an error."""
    written = 0
    for start in range(0, len(items), BULK_LIMIT):
        batch = [
            {"record_id": record_id, "values": _check(status, values), "status": status}
            for record_id, values, status in items[start:start + BULK_LIMIT]
        ]
        pending = batch
        for attempt in range(BUSY_RETRIES + 1):
            try:
                result = http.post("/api/v1/me/responses/bulk", json={"items": pending}, idempotent=True)
            except ArgillaAPIError as err:
                if not _is_busy(err) or attempt == BUSY_RETRIES:
                    raise
            else:
                failed = [(sent, item["error"]) for sent, item in zip(pending, result["items"]) if item.get("error")]
                refused = [error for _, error in failed if LOCKED not in str(error)]
                if refused or (failed and attempt == BUSY_RETRIES):
                    errors = refused or [error for _, error in failed]
                    raise UserError(f"Argilla refused {len(errors)} of {len(batch)} responses: {errors[0]}")
                pending = [sent for sent, _ in failed]
                if not pending:
                    break
            time.sleep(0.05 * 2**attempt)
        written += len(batch)
    return written


def iter_records(http: ArgillaHTTP, dataset_id: str, include: str = "responses,suggestions") -> Iterator[dict[str, Any]]:
    """Every record of a dataset with its responses (and suggestions), in insertion order (owner/admin key)."""
    offset = 0
    while True:
        page = http.get(f"/api/v1/datasets/{dataset_id}/records",
                        params={"include": include, "offset": offset, "limit": PAGE})
        items = page["items"]
        yield from items
        if len(items) < PAGE:
            return
        offset += len(items)


def pending_queue(http: ArgillaHTTP, dataset_id: str, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
    """The key's user's annotation queue, as the UI shows it: records still pending (not yet completed by
    enough annotators) that this user has not answered, in the user's own stable order; (page, total)."""
    body = {"filters": {"and": [
        {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
        {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]},
    ]}}
    result = http.post(f"/api/v1/me/datasets/{dataset_id}/records/search", json=body,
                       params={"limit": limit, "offset": 0}, idempotent=True)
    return [item["record"] for item in result["items"]], int(result["total"])
