"""The ``sqlsearch`` engine: Argilla's ``SearchEngine`` answered from Argilla's own SQL tables.

Importing this module registers the engine (``ARGILLA_SEARCH_ENGINE=sqlsearch``); it must happen inside the
server process and inside the rq worker process before they touch the search engine.

* Write hooks (``create_index``, ``index_records``, ``update_record_response``, ...) do nothing: the data is
  already in SQL when the server calls them, after its commit. Text search has its own index, written by
  database triggers (see ``fulltext``). One exception, on PostgreSQL: ``index_records`` refreshes the
  planner's statistics of ``records`` (``ANALYZE``) when the records just created are more than a tenth of
  what the planner believes the table holds. Right after a bulk load into a table that autovacuum has not
  analyzed yet, the planner expects one pending record and joins the annotator queue's "not answered by
  me" condition as a nested loop over the user's responses: 95 ms per queue query on 5,000 records, 7.6 ms
  with statistics (hash anti-join). Autovacuum would fix it a minute or more later; small tables are
  analyzed in milliseconds (14 ms for 5,000 records), and large ones rarely cross the tenth.
* ``search`` builds one SQL query: dataset, text, filters; ordered by the requested sort, then relevance
  (text queries), then the user's own stable order (the annotator queue: the server passes ``user_id`` from
  its ``/me`` endpoint although the abstract signature lacks it), then insertion order. It returns the page
  of ``(record_id, score)`` and the total count. The score is bm25/ts_rank relevance for text queries and
  1.0 otherwise.
* ``get_dataset_progress``: ``{}`` for a draft dataset, else ``{total, pending, completed}`` by record
  status. ``get_dataset_user_progress``: ``{total, submitted, draft, discarded}`` of that user's responses.
* ``compute_metrics_for``: terms metadata gives ``{total, values: [{term, count}]}`` (most frequent first),
  integer and float metadata give ``{min, max}``.
* ``similarity_search``: cosine similarity in NumPy over the dataset's vectors for that vector setting,
  after the text query and filters; the score is Elasticsearch's ``(1 + cos) / 2`` (``(1 - cos) / 2`` for
  ``least_similar``, whose order is most dissimilar first), cut at ``threshold``.

An instance is created per request (``new_instance``/``close``) and opens one ``AsyncSession``; it holds no
other state, so creating one is cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

import numpy as np
from argilla_server.database import AsyncSessionLocal, async_engine
from argilla_server.enums import MetadataPropertyType, SimilarityOrder
from argilla_server.models import (
    Dataset,
    MetadataProperty,
    Question,
    Record,
    Response,
    Suggestion,
    User,
    Vector,
    VectorSettings,
)
from argilla_server.search_engine.base import (
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataMetrics,
    Order,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import func, literal, select, true
from sqlalchemy import text as sql_text
from sqlalchemy.ext.asyncio import AsyncSession

from argilla_sqlsearch import ENGINE_NAME, fulltext
from argilla_sqlsearch.dialects import dialect_for
from argilla_sqlsearch.filters import DatasetShape, filter_condition, order_keys

__all__ = ["SQLSearchEngine"]

DIALECT = async_engine.dialect.name
SQL = dialect_for(DIALECT)


def _text_query(query: TextQuery | str | None) -> TextQuery | None:
    if query is None:
        return None
    return TextQuery(q=query) if isinstance(query, str) else query


@SearchEngine.register(engine_name=ENGINE_NAME)
class SQLSearchEngine(SearchEngine):
    """Reads Argilla's SQL tables; keeps no index of its own (text search excepted, kept by triggers)."""

    def __init__(self) -> None:
        self._db: AsyncSession | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        return cls()

    @property
    def db(self) -> AsyncSession:
        if self._db is None:
            self._db = AsyncSessionLocal()
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        await self.db.execute(select(literal(1)))
        return True

    async def info(self) -> dict:
        return {"version": {"number": "1", "distribution": ENGINE_NAME}, "backend": DIALECT}

    # ------------------------------------------------------------------ write hooks: the data is already in SQL
    async def create_index(self, dataset: Dataset) -> None:
        return None

    async def delete_index(self, dataset: Dataset) -> None:
        return None

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        return None

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        return None

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        if DIALECT != "postgresql":
            return None
        created = len(list(records))
        believed = await self.db.scalar(sql_text("SELECT reltuples FROM pg_class WHERE oid = 'records'::regclass"))
        if believed is None or created > 0.1 * max(float(believed), 0.0):
            await self.db.execute(sql_text("ANALYZE records"))
            await self.db.commit()
        return None

    async def partial_record_update(self, record: Record, **update: Any) -> None:
        return None

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        return None

    async def update_record_response(self, response: Response) -> None:
        return None

    async def delete_record_response(self, response: Response) -> None:
        return None

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        return None

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        return None

    # ------------------------------------------------------------------------------------------ helpers
    async def _shape(self, dataset_id: UUID) -> DatasetShape:
        questions = (
            await self.db.execute(select(Question.name, Question.id, Question.settings).where(Question.dataset_id == dataset_id))
        ).all()
        metadata = (
            await self.db.execute(
                select(MetadataProperty.name, MetadataProperty.settings).where(MetadataProperty.dataset_id == dataset_id)
            )
        ).all()
        return DatasetShape(
            id=dataset_id,
            question_ids={name: qid for name, qid, _ in questions},
            question_types={name: str((settings or {}).get("type")) for name, _, settings in questions},
            metadata_types={name: str((settings or {}).get("type")) for name, settings in metadata},
        )

    async def _conditions(
        self, dataset_id: UUID, query: TextQuery | str | None, filter: Filter | None
    ) -> tuple[list[Any], fulltext.TextSearch | None, DatasetShape]:
        shape = await self._shape(dataset_id)
        conditions: list[Any] = [Record.dataset_id == dataset_id]
        text = _text_query(query)
        search = None
        if text is not None:
            fields = await fulltext.field_columns(self.db, dataset_id)
            search = fulltext.text_search(DIALECT, text.q, fields, text.field)
            conditions.append(search.condition)
        if filter is not None:
            conditions.append(filter_condition(filter, shape, SQL))
        return conditions, search, shape

    # ------------------------------------------------------------------------------------------ search
    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: UUID | None = None,
    ) -> SearchResponses:
        conditions, text, shape = await self._conditions(dataset.id, query, filter)
        total = await self.db.scalar(select(func.count(Record.id)).where(*conditions))

        score = text.score if text is not None and text.score is not None else literal(1.0)
        statement = select(Record.id, score.label("score")).where(*conditions)
        if text is not None and text.score_join is not None:
            subquery, on = text.score_join
            statement = statement.outerjoin(subquery, on)
        order: list[Any] = []
        for item in sort or []:
            order.extend(order_keys(item, shape, SQL))
        if text is not None and text.score is not None:
            order.append(text.score.desc())
        if user_id is not None:
            order.append(SQL.user_rank(user_id, Record.__table__))
        order.extend([Record.inserted_at.asc(), Record.id.asc()])

        rows = (await self.db.execute(statement.order_by(*order).offset(offset).limit(limit))).all()
        return SearchResponses(
            items=[SearchResponseItem(record_id=record_id, score=float(value)) for record_id, value in rows],
            total=total or 0,
        )

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: list[float] | None = None,
        record: Record | None = None,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> SearchResponses:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")
        vector_value = value if value else record.vector_value_by_vector_settings(vector_settings)  # type: ignore[union-attr]
        if not vector_value:
            raise ValueError("Cannot find a vector value to apply with provided info")

        conditions, _, _ = await self._conditions(dataset.id, query, filter)
        conditions.append(Vector.vector_settings_id == vector_settings.id)
        if record is not None:
            conditions.append(Record.id != record.id)
        rows = (await self.db.execute(select(Record.id, Vector.value).join(Vector, Vector.record_id == Record.id).where(*conditions))).all()
        if not rows:
            return SearchResponses(items=[], total=0)

        matrix = np.asarray([vec for _, vec in rows], dtype=np.float64)
        target = np.asarray(vector_value, dtype=np.float64)
        norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(target) or 1.0)
        cosine = (matrix @ target) / np.where(norms == 0, 1.0, norms)
        if order == SimilarityOrder.least_similar:
            cosine = -cosine
        scores = (1.0 + cosine) / 2.0
        ranked = np.argsort(-scores, kind="stable")[:max_results]
        items = [
            SearchResponseItem(record_id=rows[i][0], score=float(scores[i]))
            for i in ranked
            if threshold is None or scores[i] >= threshold
        ]
        return SearchResponses(items=items, total=len(items))

    # ------------------------------------------------------------------------------------------ progress
    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        rows = (
            await self.db.execute(
                select(Record.status, func.count(Record.id)).where(Record.dataset_id == dataset.id).group_by(Record.status)
            )
        ).all()
        counts = {str(getattr(status, "value", status)): count for status, count in rows}
        return {"total": sum(counts.values()), "pending": counts.get("pending", 0), "completed": counts.get("completed", 0)}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        if dataset.is_draft:
            return {}
        rows = (
            await self.db.execute(
                select(Response.status, func.count(Response.id))
                .join(Record, Record.id == Response.record_id)
                .where(Record.dataset_id == dataset.id, Response.user_id == user.id)
                .group_by(Response.status)
            )
        ).all()
        counts = {str(getattr(status, "value", status)): count for status, count in rows}
        return {"total": sum(counts.values()), **{key: counts.get(key, 0) for key in ("submitted", "draft", "discarded")}}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        value = SQL.at(Record.metadata_, [metadata_property.name])
        in_dataset = Record.dataset_id == metadata_property.dataset_id
        if metadata_property.type == MetadataPropertyType.terms:
            elements, term = SQL.term_counts(value)
            count = func.count()
            rows = (
                await self.db.execute(
                    select(term, count)
                    .select_from(Record)
                    .join(elements, true())
                    .where(in_dataset, term.is_not(None))
                    .group_by(term)
                    .order_by(count.desc(), term)
                )
            ).all()
            return TermsMetrics(
                total=sum(c for _, c in rows), values=[TermsMetrics.TermCount(term=str(t), count=c) for t, c in rows]
            )
        elements, number = SQL.numeric_element(value)
        low, high = (
            await self.db.execute(select(func.min(number), func.max(number)).select_from(Record).join(elements, true()).where(in_dataset))
        ).one()
        if metadata_property.type == MetadataPropertyType.integer:
            return IntegerMetadataMetrics(
                min=int(low) if low is not None else None, max=int(high) if high is not None else None
            )
        return FloatMetadataMetrics(min=low, max=high)
