"""Contract of the SQL search engine through Argilla's HTTP API, on SQLite and PostgreSQL.

Every row of the semantics table in docs/labeling.md: terms and range filters on the record, metadata,
suggestion and response scopes; response status per user with the pending rules; sorts on every scope with
missing values last; the stable per-user order; text search (AND, phrase, prefix, exclusion, OR, one field,
bm25 order); progress and per-user progress; metadata metrics; similarity search. The dataset
(``conftest.CONTRACT_RECORDS``) is small and fully known, so each expectation is an exact set or order.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from rlhf.labeling import ArgillaAPIError, ArgillaHTTP, log_records, submit_response

pytestmark = pytest.mark.slow


def rec(prop: str) -> dict:
    return {"entity": "record", "property": prop}


def meta(name: str) -> dict:
    return {"entity": "metadata", "metadata_property": name}


def sugg(question: str, prop: str = "value") -> dict:
    return {"entity": "suggestion", "question": question, "property": prop}


def resp(question: str | None = None) -> dict:
    return {"entity": "response", "question": question} if question else {"entity": "response", "property": "status"}


def terms(scope: dict, *values: Any) -> dict:
    return {"type": "terms", "scope": scope, "values": list(values)}


def rng(scope: dict, ge: Any = None, le: Any = None) -> dict:
    out: dict[str, Any] = {"type": "range", "scope": scope}
    if ge is not None:
        out["ge"] = ge
    if le is not None:
        out["le"] = le
    return out


def search(http: ArgillaHTTP, data: Any, *, text: str | None = None, field: str | None = None,
           filters: list[dict] | None = None, sort: list[tuple[dict, str]] | None = None, me: bool = False,
           vector: dict | None = None, offset: int = 0, limit: int = 50) -> tuple[list[str], list[float], int]:
    """(external ids in order, scores, total) of one search request."""
    body: dict[str, Any] = {}
    query: dict[str, Any] = {}
    if text is not None:
        query["text"] = {"q": text, **({"field": field} if field else {})}
    if vector is not None:
        query["vector"] = vector
    if query:
        body["query"] = query
    if filters:
        body["filters"] = {"and": filters}
    if sort:
        body["sort"] = [{"scope": scope, "order": order} for scope, order in sort]
    prefix = "/api/v1/me" if me else "/api/v1"
    result = http.post(f"{prefix}/datasets/{data.dataset_id}/records/search", json=body,
                       params={"offset": offset, "limit": limit}, idempotent=True)
    items = result["items"]
    return [it["record"]["external_id"] for it in items], [it["query_score"] for it in items], result["total"]


def ids(http: ArgillaHTTP, data: Any, **kw: Any) -> set[str]:
    found, _, total = search(http, data, **kw)
    assert total == len(found)
    return set(found)


def assert_groups(order: list[str], groups: list[set[str]]) -> None:
    """``order`` is the groups one after the other; inside a group (equal sort keys) any order is right."""
    position = 0
    for group in groups:
        assert set(order[position:position + len(group)]) == group, (order, groups)
        position += len(group)
    assert position == len(order)


def tiny_dataset(owner: ArgillaHTTP, workspace: str, name: str, texts: dict[str, str]) -> tuple[Any, dict[str, str]]:
    """A published dataset with one text field and one rating question; (search handle, ext id -> record id)."""
    ws_id = next(w["id"] for w in owner.get("/api/v1/me/workspaces")["items"] if w["name"] == workspace)
    ds = owner.post("/api/v1/datasets", json={"name": name, "workspace_id": ws_id})
    owner.post(f"/api/v1/datasets/{ds['id']}/fields", json={"name": "text", "title": "t", "settings": {"type": "text"}})
    owner.post(f"/api/v1/datasets/{ds['id']}/questions", json={
        "name": "q", "title": "q", "required": True,
        "settings": {"type": "rating", "options": [{"value": 1}, {"value": 2}]}})
    owner.put(f"/api/v1/datasets/{ds['id']}/publish")
    record_ids = log_records(owner, ds["id"], [{"external_id": k, "fields": {"text": v}} for k, v in texts.items()])
    return type("Handle", (), {"dataset_id": ds["id"]})(), dict(zip(texts, record_ids))


@pytest.fixture()
def owner(contract: Any) -> ArgillaHTTP:
    return contract.live.http()


@pytest.fixture()
def as_a(contract: Any) -> ArgillaHTTP:
    return contract.live.http(contract.annotator_a.api_key)


@pytest.fixture()
def as_b(contract: Any) -> ArgillaHTTP:
    return contract.live.http(contract.annotator_b.api_key)


ALL = {f"r{i}" for i in range(10)}


# ------------------------------------------------------------------------------------------- record scope
def test_record_filters(contract, owner):
    assert ids(owner, contract, filters=[terms(rec("external_id"), "r1", "r3")]) == {"r1", "r3"}
    assert ids(owner, contract, filters=[terms(rec("id"), contract.ids["r2"])]) == {"r2"}
    assert ids(owner, contract, filters=[terms(rec("status"), "completed")]) == {"r0", "r3", "r4"}
    assert ids(owner, contract, filters=[terms(rec("status"), "pending")]) == ALL - {"r0", "r3", "r4"}
    assert ids(owner, contract, filters=[rng(rec("inserted_at"), ge=contract.second_batch_at)]) == {
        "r5", "r6", "r7", "r8", "r9"}


# ------------------------------------------------------------------------------------------- metadata scope
def test_metadata_filters(contract, owner):
    assert ids(owner, contract, filters=[terms(meta("topic"), "geo")]) == {"r0", "r1", "r3"}
    assert ids(owner, contract, filters=[terms(meta("topic"), "humor")]) == {"r5", "r8"}  # r8 holds a list
    assert ids(owner, contract, filters=[terms(meta("topic"), "work", "people")]) == {"r2", "r6"}
    assert ids(owner, contract, filters=[rng(meta("length"), ge=20, le=40)]) == {"r1", "r2", "r3"}
    assert ids(owner, contract, filters=[rng(meta("temp"), ge=1.0)]) == {"r4", "r5", "r8"}
    assert ids(owner, contract, filters=[rng(meta("temp"), le=0.1)]) == {"r0", "r6"}


# ------------------------------------------------------------------------------------------- suggestion scope
def test_suggestion_filters(contract, owner):
    assert ids(owner, contract, filters=[terms(sugg("label"), "good")]) == {"r0", "r2"}
    assert ids(owner, contract, filters=[rng(sugg("label", "score"), ge=0.9)]) == {"r0", "r5"}
    assert ids(owner, contract, filters=[terms(sugg("label", "agent"), "gpt")]) == {"r0", "r1", "r3"}
    assert ids(owner, contract, filters=[terms(sugg("label", "type"), "human")]) == {"r2"}
    assert ids(owner, contract, filters=[rng(sugg("quality"), ge=4)]) == {"r0", "r4"}


def test_and_of_scopes(contract, owner):
    both = [terms(meta("topic"), "geo"), rng(sugg("quality"), ge=3)]
    assert ids(owner, contract, filters=both) == {"r0", "r3"}


# ------------------------------------------------------------------------------------------- response scope
def test_response_value_filters_all_users(contract, owner):
    assert ids(owner, contract, filters=[rng(resp("quality"), ge=4)]) == {"r0", "r4", "r5"}  # drafts count
    assert ids(owner, contract, filters=[terms(resp("quality"), 1)]) == {"r0"}
    assert ids(owner, contract, filters=[terms(resp("label"), "bad")]) == {"r0", "r3"}
    assert ids(owner, contract, filters=[terms(resp("tags"), "a")]) == {"r0", "r4"}  # multi-label element


def test_response_value_filters_per_user(contract, as_a, as_b):
    assert ids(as_a, contract, me=True, filters=[rng(resp("quality"), ge=4)]) == {"r0"}
    assert ids(as_b, contract, me=True, filters=[rng(resp("quality"), ge=4)]) == {"r4", "r5"}


def test_response_status_without_user(contract, owner):
    status = resp()
    assert ids(owner, contract, filters=[terms(status, "pending")]) == {"r6", "r7", "r8", "r9"}  # no response at all
    assert ids(owner, contract, filters=[terms(status, "submitted")]) == {"r0", "r3", "r4"}
    assert ids(owner, contract, filters=[terms(status, "draft")]) == {"r1", "r5"}
    assert ids(owner, contract, filters=[terms(status, "discarded")]) == {"r2"}
    assert ids(owner, contract, filters=[terms(status, "pending", "discarded")]) == {"r2", "r6", "r7", "r8", "r9"}


def test_response_status_per_user(contract, as_a, as_b):
    status = resp()
    assert ids(as_a, contract, me=True, filters=[terms(status, "pending")]) == {"r4", "r5", "r6", "r7", "r8", "r9"}
    assert ids(as_a, contract, me=True, filters=[terms(status, "submitted")]) == {"r0", "r3"}
    assert ids(as_a, contract, me=True, filters=[terms(status, "draft")]) == {"r1"}
    assert ids(as_a, contract, me=True, filters=[terms(status, "discarded")]) == {"r2"}
    assert ids(as_a, contract, me=True, filters=[terms(status, "pending", "draft")]) == {
        "r1", "r4", "r5", "r6", "r7", "r8", "r9"}
    assert ids(as_b, contract, me=True, filters=[terms(status, "pending")]) == {"r1", "r2", "r3", "r6", "r7", "r8", "r9"}
    assert ids(as_b, contract, me=True, filters=[terms(status, "submitted")]) == {"r0", "r4"}


# ------------------------------------------------------------------------------------------- sorting
def test_sort_record_and_metadata(contract, owner):
    order, _, _ = search(owner, contract, sort=[(rec("external_id"), "desc")])
    assert order == [f"r{i}" for i in range(9, -1, -1)]
    order, _, _ = search(owner, contract, sort=[(meta("length"), "desc")])
    assert order == ["r8", "r7", "r6", "r5", "r4", "r3", "r2", "r1", "r0", "r9"]  # missing last
    order, _, _ = search(owner, contract, sort=[(meta("length"), "asc")])
    assert order == ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"]  # missing last again
    order, _, _ = search(owner, contract, sort=[(meta("topic"), "asc")])  # a list sorts by its smallest term
    assert_groups(order, [{"r4"}, {"r0", "r1", "r3"}, {"r5", "r8"}, {"r7"}, {"r2"}, {"r6"}, {"r9"}])
    order, _, _ = search(owner, contract, sort=[(meta("topic"), "desc")])  # ... and by its largest descending
    assert_groups(order, [{"r6"}, {"r0"}, {"r2"}, {"r7", "r8"}, {"r5"}, {"r1", "r3"}, {"r4"}, {"r9"}])
    order, _, _ = search(owner, contract, sort=[(meta("temp"), "asc"), (rec("external_id"), "asc")])
    assert order[:3] == ["r6", "r0", "r3"]


def test_sort_suggestion_and_response(contract, owner, as_a):
    order, _, _ = search(owner, contract, sort=[(sugg("label", "score"), "desc")])
    assert_groups(order, [{"r5"}, {"r0"}, {"r2"}, {"r1"}, {"r3"}, {"r4", "r6", "r7", "r8", "r9"}])
    order, _, _ = search(owner, contract, sort=[(sugg("label", "agent"), "asc")])  # annotator-x < gpt < other
    assert_groups(order, [{"r2"}, {"r0", "r1", "r3"}, {"r5"}, {"r4", "r6", "r7", "r8", "r9"}])
    order, _, _ = search(owner, contract, sort=[(sugg("quality"), "desc")])
    assert_groups(order, [{"r0"}, {"r4"}, {"r3"}, {"r1"}, {"r2", "r5", "r6", "r7", "r8", "r9"}])
    order, _, _ = search(owner, contract, sort=[(resp("quality"), "asc")])  # mean over users: r0 = (5+1)/2
    assert_groups(order, [{"r1"}, {"r0", "r3"}, {"r4"}, {"r5"}, {"r2", "r6", "r7", "r8", "r9"}])
    order, _, _ = search(as_a, contract, me=True, sort=[(resp("quality"), "desc")])  # only A's answers
    assert order[:3] == ["r0", "r3", "r1"]


# ------------------------------------------------------------------------------------------- per-user order
def test_stable_per_user_order(contract, as_a, as_b):
    first_a, _, total = search(as_a, contract, me=True)
    again_a, _, _ = search(as_a, contract, me=True)
    first_b, _, _ = search(as_b, contract, me=True)
    assert total == 10 and sorted(first_a) == sorted(ALL) and sorted(first_b) == sorted(ALL)
    assert first_a == again_a  # stable for one annotator
    assert first_a != first_b  # different between annotators (1 chance in 10! to coincide)
    pages = search(as_a, contract, me=True, limit=4)[0] + search(as_a, contract, me=True, offset=4, limit=6)[0]
    assert pages == first_a  # pages tile the same order
    queue, _, _ = search(as_a, contract, me=True, filters=[terms(resp(), "pending")])
    assert queue == [r for r in first_a if r in {"r4", "r5", "r6", "r7", "r8", "r9"}]


# ------------------------------------------------------------------------------------------- text search
@pytest.mark.parametrize("query, expected", [
    ("capital", {"r0", "r1", "r3"}),
    ("CAPITAL", {"r0", "r1", "r3"}),
    ("capital paris", {"r0"}),                  # AND of terms
    ("capital +paris", {"r0"}),
    ("capital lovely", {"r0"}),                 # terms in different fields of one record
    ('"capital of france"', {"r0"}),            # phrase
    ('"capital france"', set()),
    ('"paris paris"', set()),                   # a phrase never spans two fields
    ("capit*", {"r0", "r1", "r3", "r4"}),       # prefix
    ("paris -capital", {"r2"}),                 # exclusion
    ("-capital", ALL - {"r0", "r1", "r3"}),
    ("berlin | rome", {"r1", "r3"}),            # OR
    ("(berlin | rome) museums", {"r1"}),
    ("secret", {"r5"}),                         # text inside a chat field
    ("zebrastripes", set()),                    # image fields are not indexed
    ("?!", set()),                              # nothing searchable matches nothing, as in Elasticsearch
])
def test_text_query_syntax(contract, owner, query, expected):
    assert ids(owner, contract, text=query) == expected


def test_text_search_in_one_field(contract, owner):
    assert ids(owner, contract, text="paris", field="answer") == {"r0"}
    assert ids(owner, contract, text="paris", field="prompt") == {"r0", "r2"}
    assert ids(owner, contract, text="hello", field="conversation") == {"r0"}
    assert ids(owner, contract, text="hello", field="prompt") == {"r7"}
    with pytest.raises(ArgillaAPIError) as err:
        search(owner, contract, text="paris", field="nope")
    assert err.value.status == 422


def test_text_search_ranks_by_relevance(contract, owner):
    order, scores, _ = search(owner, contract, text="paris")
    assert order == ["r0", "r2"]  # twice in a short record beats once in a long one
    assert scores[0] > scores[1] > 0
    assert ids(owner, contract, text="capital", filters=[terms(meta("topic"), "geo")]) == {"r0", "r1", "r3"}


# ------------------------------------------------------------------------------------------- progress, metrics
def test_dataset_progress(contract, owner):
    progress = owner.get(f"/api/v1/datasets/{contract.dataset_id}/progress")
    assert (progress["total"], progress["completed"], progress["pending"]) == (10, 3, 7)


def test_draft_dataset_progress_is_empty(contract, owner):
    ws = owner.get("/api/v1/me/workspaces")["items"]
    ws_id = next(w["id"] for w in ws if w["name"] == contract.workspace)
    draft = owner.post("/api/v1/datasets", json={"name": "draft-progress", "workspace_id": ws_id})
    progress = owner.get(f"/api/v1/datasets/{draft['id']}/progress")
    assert (progress["total"], progress["completed"], progress["pending"]) == (0, 0, 0)


def test_user_progress(contract, as_a, as_b):
    a = as_a.get(f"/api/v1/me/datasets/{contract.dataset_id}/metrics")["responses"]
    assert a == {"total": 10, "submitted": 2, "draft": 1, "discarded": 1, "pending": 6}
    b = as_b.get(f"/api/v1/me/datasets/{contract.dataset_id}/metrics")["responses"]
    assert b == {"total": 10, "submitted": 2, "draft": 1, "discarded": 0, "pending": 7}


def test_metadata_metrics(contract, owner):
    props = {p["name"]: p["id"] for p in owner.get(f"/api/v1/me/datasets/{contract.dataset_id}/metadata-properties")["items"]}
    topic = owner.get(f"/api/v1/metadata-properties/{props['topic']}/metrics")
    assert topic["total"] == 11
    assert topic["values"][:3] == [{"term": "geo", "count": 3}, {"term": "humor", "count": 2},
                                   {"term": "language", "count": 2}]
    assert {v["term"]: v["count"] for v in topic["values"]} == {
        "geo": 3, "humor": 2, "language": 2, "travel": 1, "economy": 1, "people": 1, "work": 1}
    length = owner.get(f"/api/v1/metadata-properties/{props['length']}/metrics")
    assert (length["type"], length["min"], length["max"]) == ("integer", 10, 90)
    temp = owner.get(f"/api/v1/metadata-properties/{props['temp']}/metrics")
    assert temp["type"] == "float" and temp["min"] == pytest.approx(0.0) and temp["max"] == pytest.approx(2.5)


# ------------------------------------------------------------------------------------------- similarity
def test_similarity_search(contract, owner):
    order, scores, _ = search(owner, contract, vector={"name": "emb", "value": [1.0, 0.0, 0.0]})
    assert order == [f"r{i}" for i in range(10)]  # by angle from (1, 0, 0)
    for score, angle in zip(scores, range(0, 200, 20)):
        assert score == pytest.approx((1 + math.cos(math.radians(angle))) / 2, abs=1e-6)
    order, _, _ = search(owner, contract, vector={"name": "emb", "value": [1.0, 0.0, 0.0], "order": "least_similar"})
    assert order == [f"r{i}" for i in range(9, -1, -1)]
    order, _, _ = search(owner, contract, vector={"name": "emb", "record_id": contract.ids["r0"]}, limit=3)
    assert order == ["r1", "r2", "r3"]  # the record itself is excluded
    order, _, _ = search(owner, contract, vector={"name": "emb", "value": [1.0, 0.0, 0.0]},
                         filters=[terms(meta("topic"), "geo")])
    assert order == ["r0", "r1", "r3"]


# ------------------------------------------------------------------------------------------- staying in step
def test_text_index_follows_updates_and_deletes(contract, service):
    owner = service.http()
    data, rid = tiny_dataset(owner, contract.workspace, "follow", {"a": "alpha words", "b": "beta words"})
    assert ids(owner, data, text="alpha") == {"a"}
    owner.put(f"/api/v1/datasets/{data.dataset_id}/records/bulk",
              json={"items": [{"id": rid["a"], "fields": {"text": "gamma words"}}]})
    assert ids(owner, data, text="alpha") == set()
    assert ids(owner, data, text="gamma") == {"a"}
    owner.delete(f"/api/v1/records/{rid['b']}")
    assert ids(owner, data, text="words") == {"a"}
    owner.delete(f"/api/v1/datasets/{data.dataset_id}")
    if service.backend == "sqlite":  # the trigger on records cleared the index rows of the deleted dataset
        import sqlite3

        with sqlite3.connect(service.home / "data" / "argilla.db") as db:
            orphans = db.execute("SELECT count(*) FROM sqlsearch_text t LEFT JOIN records r ON r.id = t.record_id "
                                 "WHERE r.id IS NULL").fetchone()[0]
        assert orphans == 0


def test_discard_then_submit_keeps_one_response(contract, service):
    owner = service.http()
    data, rid = tiny_dataset(owner, contract.workspace, "resubmit", {"x": "some text"})
    user = service.new_user("ann-c", contract.workspace)
    client = service.http(user.api_key)
    assert submit_response(client, rid["x"], None, "discarded").outcome == "created"
    assert submit_response(client, rid["x"], {"q": {"value": 2}}).outcome == "upserted"  # the 409 path
    assert ids(client, data, me=True, filters=[terms(resp(), "submitted")]) == {"x"}
    record = owner.get(f"/api/v1/datasets/{data.dataset_id}/records", params={"include": "responses"})["items"][0]
    assert [(r["user_id"], r["status"], r["values"]) for r in record["responses"]] == [
        (user.user.id, "submitted", {"q": {"value": 2}})]
