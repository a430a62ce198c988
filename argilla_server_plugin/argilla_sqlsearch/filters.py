"""Filters and sorts of Argilla's search API, as SQL conditions and order keys over the ``records`` table.

The server hands the engine ``TermsFilter``/``RangeFilter``/``AndFilter`` objects over four scopes; each
becomes a condition on a row of ``records`` (correlated ``EXISTS`` subqueries for suggestions and responses):

* ``RecordFilterScope(property)``: ``id``, ``external_id``, ``status``, ``inserted_at``, ``updated_at``.
  Date ranges take ISO-8601 text or epoch milliseconds (what Elasticsearch accepts for a date field).
* ``MetadataFilterScope(name)``: any element of the record's metadata value (scalar or list).
* ``SuggestionFilterScope(question, property)``: the suggestion for that question, on its ``value``
  (any element), ``score`` (any element), ``agent`` or ``type``.
* ``ResponseFilterScope(question=..., user=...)``: some response (by that user, when given) whose value for
  the question matches. ``ResponseFilterScope(property="status")`` with a terms filter follows Argilla's
  pending rules: ``pending`` means *no response by that user* (with no user: no response at all), any other
  status means *a response with that status* (by that user, when given), and ``pending`` together with
  other statuses is their OR.

Sorts mirror Elasticsearch: missing values last in both directions; a multi-valued key sorts by its smallest
element ascending and its largest descending; a sort on a response question uses the average over the
responses (by the user, when given), as Elasticsearch's nested ``mode: avg``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from argilla_server.enums import ResponseStatusFilter
from argilla_server.models import Record, Response, Suggestion
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    MetadataFilterScope,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SuggestionFilterScope,
    TermsFilter,
)
from sqlalchemy import and_, exists, false, func, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from argilla_sqlsearch.dialects import SqlDialect

__all__ = ["DatasetShape", "filter_condition", "order_keys"]

RECORD_PROPERTIES = ("id", "external_id", "status", "inserted_at", "updated_at")
NUMERIC_METADATA = ("integer", "float")


@dataclasses.dataclass(frozen=True)
class DatasetShape:
    """What the SQL needs to know about a dataset: its questions and metadata properties by name."""

    id: UUID
    question_ids: dict[str, UUID]
    question_types: dict[str, str]
    metadata_types: dict[str, str]

    def question_id(self, name: str) -> UUID:
        if name not in self.question_ids:
            raise ValueError(f"question '{name}' is not defined in dataset {self.id}")
        return self.question_ids[name]


def _value(item: Any) -> Any:
    return getattr(item, "value", item)


def _to_datetime(value: Any) -> datetime:
    """A range bound on a date column: ISO-8601 text or epoch milliseconds, as naive UTC (Argilla's storage)."""
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc).replace(tzinfo=None)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def _range(column: Any, ge: Any, le: Any) -> ColumnElement[bool]:
    conds = []
    if ge is not None:
        conds.append(column >= ge)
    if le is not None:
        conds.append(column <= le)
    return and_(true(), *conds)


# ----------------------------------------------------------------------------------------------- filters
def filter_condition(filter: Filter, shape: DatasetShape, sql: SqlDialect) -> ColumnElement[bool]:
    """The SQL condition on ``records`` for an Argilla search filter."""
    if isinstance(filter, AndFilter):
        return and_(true(), *[filter_condition(child, shape, sql) for child in filter.filters])
    scope = filter.scope
    if isinstance(scope, RecordFilterScope):
        return _record_filter(str(_value(scope.property)), filter)
    if isinstance(scope, MetadataFilterScope):
        return _json_filter(sql.at(Record.metadata_, [scope.metadata_property]), filter, sql)
    if isinstance(scope, SuggestionFilterScope):
        return _suggestion_filter(scope, filter, shape, sql)
    if isinstance(scope, ResponseFilterScope):
        return _response_filter(scope, filter, shape, sql)
    raise ValueError(f"cannot filter on scope {scope!r}")


def _record_filter(prop: str, filter: TermsFilter | RangeFilter) -> ColumnElement[bool]:
    if prop not in RECORD_PROPERTIES:
        raise ValueError(f"cannot filter records on '{prop}' (one of {', '.join(RECORD_PROPERTIES)})")
    column = getattr(Record, prop)
    dated = prop in ("inserted_at", "updated_at")
    if isinstance(filter, TermsFilter):
        values = [_value(v) for v in filter.values]
        if prop == "id":
            ids = []
            for value in values:
                try:
                    ids.append(UUID(str(value)))
                except ValueError:
                    continue  # a malformed id matches nothing, as in Elasticsearch
            return column.in_(ids) if ids else false()
        if dated:
            return column.in_([_to_datetime(v) for v in values])
        return column.in_([str(v) for v in values])
    ge = _to_datetime(filter.ge) if dated and filter.ge is not None else filter.ge
    le = _to_datetime(filter.le) if dated and filter.le is not None else filter.le
    return _range(column, ge, le)


def _json_filter(json_value: Any, filter: TermsFilter | RangeFilter, sql: SqlDialect) -> ColumnElement[bool]:
    if isinstance(filter, TermsFilter):
        return sql.any_term(json_value, list(filter.values))
    return sql.any_in_range(json_value, filter.ge, filter.le)


def _suggestion_filter(
    scope: SuggestionFilterScope, filter: TermsFilter | RangeFilter, shape: DatasetShape, sql: SqlDialect
) -> ColumnElement[bool]:
    prop = str(_value(scope.property) or "value")
    if prop in ("value", "score"):
        column = Suggestion.value if prop == "value" else Suggestion.score
        cond = _json_filter(sql.at(column, []), filter, sql)
    elif prop in ("agent", "type"):
        column = getattr(Suggestion, prop)
        if isinstance(filter, TermsFilter):
            cond = column.in_([str(_value(v)) for v in filter.values])
        else:
            cond = _range(column, filter.ge, filter.le)
    else:
        raise ValueError(f"cannot filter suggestions on '{prop}' (one of value, score, agent, type)")
    return exists(
        select(Suggestion.id).where(
            Suggestion.record_id == Record.id,
            Suggestion.question_id == shape.question_id(scope.question),
            cond,
        )
    )


def _responses_exist(user_id: UUID | None, *conds: ColumnElement[bool]) -> ColumnElement[bool]:
    by_user = [Response.user_id == user_id] if user_id is not None else []
    return exists(select(Response.id).where(Response.record_id == Record.id, *by_user, *conds))


def _response_filter(
    scope: ResponseFilterScope, filter: TermsFilter | RangeFilter, shape: DatasetShape, sql: SqlDialect
) -> ColumnElement[bool]:
    user_id = scope.user.id if scope.user is not None else None
    if scope.question:
        shape.question_id(scope.question)
        return _responses_exist(user_id, _json_filter(sql.at(Response.values, [scope.question, "value"]), filter, sql))
    if str(_value(scope.property)) == "status" and isinstance(filter, TermsFilter):
        statuses = {str(_value(v)) for v in filter.values}
        parts: list[ColumnElement[bool]] = []
        if ResponseStatusFilter.pending.value in statuses:
            parts.append(not_(_responses_exist(user_id)))
        others = sorted(statuses - {ResponseStatusFilter.pending.value})
        if others:
            parts.append(_responses_exist(user_id, Response.status.in_(others)))
        return or_(false(), *parts)
    raise ValueError(f"cannot filter responses on {scope!r} with {type(filter).__name__}")


# ----------------------------------------------------------------------------------------------- sorting
def order_keys(order: Order, shape: DatasetShape, sql: SqlDialect) -> list[Any]:
    """ORDER BY items for one Argilla sort entry (missing values last in both directions)."""
    descending = str(_value(order.order)) == "desc"
    key = _sort_key(order.scope, shape, sql, descending)
    return [(key.desc() if descending else key.asc()).nulls_last()]


def _sort_key(scope: Any, shape: DatasetShape, sql: SqlDialect, descending: bool) -> ColumnElement[Any]:
    if isinstance(scope, RecordFilterScope):
        prop = str(_value(scope.property))
        if prop not in RECORD_PROPERTIES:
            raise ValueError(f"cannot sort records on '{prop}' (one of {', '.join(RECORD_PROPERTIES)})")
        return getattr(Record, prop)
    if isinstance(scope, MetadataFilterScope):
        numeric = shape.metadata_types.get(scope.metadata_property) in NUMERIC_METADATA
        return sql.sort_key(sql.at(Record.metadata_, [scope.metadata_property]), numeric, descending)
    if isinstance(scope, SuggestionFilterScope):
        return _suggestion_sort_key(scope, shape, sql, descending)
    if isinstance(scope, ResponseFilterScope):
        return _response_sort_key(scope, shape, sql)
    raise ValueError(f"cannot sort on scope {scope!r}")


def _suggestion_sort_key(
    scope: SuggestionFilterScope, shape: DatasetShape, sql: SqlDialect, descending: bool
) -> ColumnElement[Any]:
    prop = str(_value(scope.property) or "value")
    where = (Suggestion.record_id == Record.id, Suggestion.question_id == shape.question_id(scope.question))
    if prop in ("value", "score"):
        numeric = prop == "score" or shape.question_types.get(scope.question) == "rating"
        column = Suggestion.value if prop == "value" else Suggestion.score
        key = sql.sort_key(sql.at(column, []), numeric, descending)
    elif prop in ("agent", "type"):
        key = getattr(Suggestion, prop)
    else:
        raise ValueError(f"cannot sort suggestions on '{prop}' (one of value, score, agent, type)")
    return select(key).where(*where).limit(1).scalar_subquery()


def _response_sort_key(scope: ResponseFilterScope, shape: DatasetShape, sql: SqlDialect) -> ColumnElement[Any]:
    by_user = [Response.user_id == scope.user.id] if scope.user is not None else []
    if scope.question:
        shape.question_id(scope.question)
        value = sql.at(Response.values, [scope.question, "value"])
        if shape.question_types.get(scope.question) == "rating":
            agg = func.avg(sql.number(value))
        else:
            agg = func.min(sql.text(value))
    elif str(_value(scope.property)) == "status":
        agg = func.min(Response.status)
    else:
        raise ValueError(f"cannot sort responses on {scope!r}")
    return select(agg).where(Response.record_id == Record.id, *by_user).scalar_subquery()
