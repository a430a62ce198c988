"""Contract of the SQL search engine through the argilla 2.8 SDK, on SQLite and PostgreSQL.

The same dataset and expectations as the HTTP contract, for what the SDK exposes: filters on every scope
(``rg.Filter`` conditions), text queries, similarity search, dataset progress, export with responses, and
dataset creation and logging through the SDK (a logged record is searchable at once). The SDK has no sort,
no per-user queue and no metadata metrics, and annotators get 403 from its dataset calls; those semantics
are covered through HTTP in test_search_contract_http.py.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import argilla as rg
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture()
def dataset(contract: Any) -> Any:
    client = contract.live.sdk()
    return client.datasets(name="contract", workspace=contract.workspace)


def found(dataset: Any, **query: Any) -> set[str]:
    return {record.id for record in dataset.records(query=rg.Query(**query))}


@pytest.mark.parametrize("condition, expected", [
    (("status", "==", "completed"), {"r0", "r3", "r4"}),
    (("id", "in", ["r1", "r3"]), {"r1", "r3"}),
    (("metadata.topic", "==", "geo"), {"r0", "r1", "r3"}),
    (("metadata.topic", "in", ["humor", "work"]), {"r5", "r6", "r8"}),
    (("metadata.length", ">=", 80), {"r7", "r8"}),
    (("metadata.temp", "<=", 0.1), {"r0", "r6"}),
    (("label.suggestion", "==", "good"), {"r0", "r2"}),
    (("label.score", ">=", 0.9), {"r0", "r5"}),
    (("label.agent", "==", "gpt"), {"r0", "r1", "r3"}),
    (("label.type", "==", "human"), {"r2"}),
    (("quality.response", ">=", 4), {"r0", "r4", "r5"}),
    (("tags.response", "==", "a"), {"r0", "r4"}),
    (("response.status", "==", "pending"), {"r6", "r7", "r8", "r9"}),
    (("response.status", "in", ["draft", "discarded"]), {"r1", "r2", "r5"}),
])
def test_sdk_filters(dataset, condition, expected):
    assert found(dataset, filter=rg.Filter(condition)) == expected


def test_sdk_filter_on_server_id_and_date(dataset, contract):
    assert found(dataset, filter=rg.Filter(("_server_id", "==", contract.ids["r4"]))) == {"r4"}
    assert found(dataset, filter=rg.Filter(("inserted_at", ">=", contract.second_batch_at))) == {
        "r5", "r6", "r7", "r8", "r9"}
    both = rg.Filter([("metadata.topic", "==", "geo"), ("quality.suggestion", ">=", 3)])
    assert found(dataset, filter=both) == {"r0", "r3"}


@pytest.mark.parametrize("text, expected", [
    ("capital paris", {"r0"}),
    ('"capital of france"', {"r0"}),
    ("capit*", {"r0", "r1", "r3", "r4"}),
    ("paris -capital", {"r2"}),
    ("berlin | rome", {"r1", "r3"}),
])
def test_sdk_text_queries(dataset, text, expected):
    assert found(dataset, query=text) == expected


def test_sdk_text_and_filter(dataset):
    assert found(dataset, query="capital", filter=rg.Filter(("metadata.length", "<=", 20))) == {"r0", "r1"}


def test_sdk_similarity(dataset):
    results = list(dataset.records(query=rg.Query(similar=rg.Similar(name="emb", value=[1.0, 0.0, 0.0]))))
    assert [record.id for record, _ in results] == [f"r{i}" for i in range(10)]
    for (_, score), angle in zip(results, range(0, 200, 20)):
        assert score == pytest.approx((1 + math.cos(math.radians(angle))) / 2, abs=1e-6)
    least = list(dataset.records(query=rg.Query(similar=rg.Similar(name="emb", value=[1.0, 0.0, 0.0],
                                                                    most_similar=False))))
    assert [record.id for record, _ in least][:2] == ["r9", "r8"]


def test_sdk_progress_and_export(dataset):
    progress = dataset.progress()
    assert (progress["total"], progress["completed"], progress["pending"]) == (10, 3, 7)
    exported = {record.id: record for record in dataset.records(with_responses=True, with_suggestions=True)}
    assert set(exported) == {f"r{i}" for i in range(10)}
    r0 = exported["r0"]
    assert sorted(r.value for r in r0.responses["quality"]) == [1, 5]
    assert r0.suggestions["label"].value == "good" and r0.suggestions["label"].agent == "gpt"


def test_sdk_created_dataset_is_searchable_at_once(contract):
    client = contract.live.sdk()
    settings = rg.Settings(
        fields=[rg.TextField(name="text", use_markdown=False)],
        questions=[rg.RankingQuestion(name="rank", values=["a", "b"])],
        metadata=[rg.TermsMetadataProperty(name="kind")],
    )
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    ds = rg.Dataset(name=name, workspace=contract.workspace, settings=settings, client=client)
    ds.create()
    ds.records.log([rg.Record(id="s1", fields={"text": "the quick brown fox"}, metadata={"kind": "x"}),
                    rg.Record(id="s2", fields={"text": "lazy dogs sleep"}, metadata={"kind": "y"})])
    assert found(ds, query="quick fox") == {"s1"}
    assert found(ds, filter=rg.Filter(("metadata.kind", "==", "y"))) == {"s2"}
    ds.records.log([rg.Record(id="s2", fields={"text": "a quick update"})])  # upsert by id: fields change
    assert found(ds, query="quick") == {"s1", "s2"}
    assert found(ds, query="lazy") == set()
    ds.delete()
