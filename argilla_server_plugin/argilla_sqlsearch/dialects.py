"""The SQL fragments that differ between SQLite and PostgreSQL: JSON values and the per-user record order.

Argilla keeps metadata, suggestion values and response values in JSON columns (``JSON`` on both databases).
A value may be a scalar or an array (a multi-label answer, a list of terms); Elasticsearch indexes each
array element as one value, so every filter here works on the *elements* of a JSON value: a scalar is one
element, an array is its elements. Numbers compare as numbers, strings as strings; a filter value that looks
like a number matches both the number and the string (Elasticsearch's keyword fields hold numbers as text).

The per-user order replaces Elasticsearch's ``random_score`` seeded by the user id: each annotator gets a
different order that stays the same across requests, so two annotators rarely work on the same record at
the same time and a page reload does not reshuffle the queue. On SQLite it is a keyed integer hash of the
record's rowid in plain SQL (``userorder``), on PostgreSQL ``hashtextextended(record_id, seed)`` with a
seed from the user id (``userorder.user_rank_seed``).
"""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from argilla_sqlsearch.userorder import user_rank_seed, user_rank_sql

__all__ = ["PostgresDialect", "SqlDialect", "SqliteDialect", "dialect_for", "term_candidates"]


def term_candidates(values: list[Any]) -> tuple[list[str], list[float]]:
    """The strings and numbers a terms filter matches: every value as text, and as a number when it is one."""
    strings: list[str] = []
    numbers: list[float] = []
    for value in values:
        value = getattr(value, "value", value)  # enum members
        text = str(value)
        strings.append(text)
        if isinstance(value, bool):
            continue
        try:
            numbers.append(float(text))
        except ValueError:
            pass
    return strings, numbers


class SqlDialect(Protocol):
    """JSON element predicates and aggregates over ``json_value`` (a JSON scalar or array expression)."""

    name: str

    def at(self, column: Any, path: list[str]) -> ColumnElement[Any]:
        """The JSON value at ``path`` (object keys) inside ``column``."""

    def number(self, json_value: ColumnElement[Any]) -> ColumnElement[Any]:
        """A scalar JSON number as a SQL number (NULL for anything else)."""

    def text(self, json_value: ColumnElement[Any]) -> ColumnElement[Any]:
        """A scalar JSON string as SQL text (NULL for anything else)."""

    def any_term(self, json_value: ColumnElement[Any], values: list[Any]) -> ColumnElement[bool]:
        """True when some element of ``json_value`` equals one of ``values``."""

    def any_in_range(self, json_value: ColumnElement[Any], ge: float | None, le: float | None) -> ColumnElement[bool]:
        """True when some numeric element of ``json_value`` lies in ``[ge, le]``."""

    def sort_key(self, json_value: ColumnElement[Any], numeric: bool, descending: bool) -> ColumnElement[Any]:
        """Elasticsearch's sort key of a multi-valued field: the smallest element ascending, the largest descending."""

    def term_counts(self, json_value: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any]]:
        """(FROM item yielding one row per element, the element's text) for counting terms."""

    def numeric_element(self, json_value: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any]]:
        """(FROM item yielding one row per element, the element as a number or NULL) for min/max metrics."""

    def user_rank(self, user_id: UUID, records: Table) -> ColumnElement[Any]:
        """The per-user order key of a row of ``records`` (Argilla's records table)."""


class SqliteDialect:
    """SQLite: ``json_extract``/``json_each`` (JSON1, built in since 3.38) and the rowid hash of ``userorder``."""

    name = "sqlite"

    def at(self, column: Any, path: list[str]) -> ColumnElement[Any]:
        # `->` returns JSON text (a string stays quoted), which json_each accepts for scalars and arrays alike.
        if not path:
            return column
        return column.op("->")(literal("$" + "".join(f'."{key}"' for key in path), String))

    def number(self, json_value: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((func.json_type(json_value).in_(("integer", "real")), func.json_extract(json_value, "$")),
                    else_=None)

    def text(self, json_value: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((func.json_type(json_value) == "text", func.json_extract(json_value, "$")), else_=None)

    def _elements(self, json_value: ColumnElement[Any]) -> Any:
        # json_each over a scalar yields the scalar once; over an array, each element; over NULL, nothing.
        return func.json_each(json_value).table_valued("value", "type").alias("el")

    def any_term(self, json_value: ColumnElement[Any], values: list[Any]) -> ColumnElement[bool]:
        strings, numbers = term_candidates(values)
        el = self._elements(json_value)
        cond = or_(
            and_(el.c.type == "text", el.c.value.in_(strings)),
            and_(el.c.type.in_(("integer", "real")), el.c.value.in_(numbers)) if numbers else false(),
        )
        return exists(select(literal(1)).select_from(el).where(cond))

    def any_in_range(self, json_value: ColumnElement[Any], ge: float | None, le: float | None) -> ColumnElement[bool]:
        el = self._elements(json_value)
        conds = [el.c.type.in_(("integer", "real"))]
        if ge is not None:
            conds.append(el.c.value >= ge)
        if le is not None:
            conds.append(el.c.value <= le)
        return exists(select(literal(1)).select_from(el).where(*conds))

    def sort_key(self, json_value: ColumnElement[Any], numeric: bool, descending: bool) -> ColumnElement[Any]:
        el = self._elements(json_value)
        kinds = ("integer", "real") if numeric else ("text",)
        agg = func.max if descending else func.min
        return select(agg(el.c.value)).select_from(el).where(el.c.type.in_(kinds)).scalar_subquery()

    def term_counts(self, json_value: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any]]:
        el = self._elements(json_value)
        text = case((el.c.type == "text", el.c.value), else_=cast(el.c.value, String))
        return el, text

    def numeric_element(self, json_value: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any]]:
        el = self._elements(json_value)
        return el, case((el.c.type.in_(("integer", "real")), el.c.value), else_=None)

    def user_rank(self, user_id: UUID, records: Table) -> ColumnElement[Any]:
        return literal_column(user_rank_sql(f"{records.name}.rowid", str(user_id)))


class PostgresDialect:
    """PostgreSQL: ``json_extract_path``, ``json_array_elements`` over the value (wrapped when a scalar), md5."""

    name = "postgresql"

    def at(self, column: Any, path: list[str]) -> ColumnElement[Any]:
        if not path:
            return column
        return func.json_extract_path(column, *[literal(key, String) for key in path])

    def number(self, json_value: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((func.json_typeof(json_value) == "number",
                     cast(json_value.op("#>>")(literal_column("'{}'")), Float)), else_=None)

    def text(self, json_value: ColumnElement[Any]) -> ColumnElement[Any]:
        return case((func.json_typeof(json_value) == "string", json_value.op("#>>")(literal_column("'{}'"))),
                    else_=None)

    def _elements(self, json_value: ColumnElement[Any]) -> Any:
        as_array = case(
            (func.json_typeof(json_value) == "array", json_value),
            else_=func.json_build_array(json_value),
        )
        return func.json_array_elements(as_array).table_valued("value").alias("el")

    @staticmethod
    def _text(el: Any) -> ColumnElement[Any]:
        return el.c.value.op("#>>")(literal_column("'{}'"))

    def _number(self, el: Any) -> ColumnElement[Any]:
        # CASE guards the cast: PostgreSQL does not promise to evaluate AND operands left to right.
        return case((func.json_typeof(el.c.value) == "number", cast(self._text(el), Float)), else_=None)

    def any_term(self, json_value: ColumnElement[Any], values: list[Any]) -> ColumnElement[bool]:
        strings, numbers = term_candidates(values)
        el = self._elements(json_value)
        cond = or_(
            and_(func.json_typeof(el.c.value) == "string", self._text(el).in_(strings)),
            self._number(el).in_(numbers) if numbers else false(),
        )
        return exists(select(literal(1)).select_from(el).where(cond))

    def any_in_range(self, json_value: ColumnElement[Any], ge: float | None, le: float | None) -> ColumnElement[bool]:
        el = self._elements(json_value)
        number = self._number(el)
        conds = [number.is_not(None)]
        if ge is not None:
            conds.append(number >= ge)
        if le is not None:
            conds.append(number <= le)
        return exists(select(literal(1)).select_from(el).where(*conds))

    def sort_key(self, json_value: ColumnElement[Any], numeric: bool, descending: bool) -> ColumnElement[Any]:
        el = self._elements(json_value)
        value = self._number(el) if numeric else case(
            (func.json_typeof(el.c.value) == "string", self._text(el)), else_=None)
        agg = func.max if descending else func.min
        return select(agg(value)).select_from(el).scalar_subquery()

    def term_counts(self, json_value: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any]]:
        el = self._elements(json_value)
        return el, case((func.json_typeof(el.c.value) == "null", None), else_=self._text(el))

    def numeric_element(self, json_value: ColumnElement[Any]) -> tuple[Any, ColumnElement[Any]]:
        el = self._elements(json_value)
        return el, self._number(el)

    def user_rank(self, user_id: UUID, records: Table) -> ColumnElement[Any]:
        # hashtextextended(text, seed): PostgreSQL's seeded 64-bit text hash (11+, what hash partitioning uses)
        seed = literal(user_rank_seed(str(user_id)), BigInteger)
        return func.hashtextextended(cast(records.c.id, String), seed)


def dialect_for(name: str) -> SqlDialect:
    """The dialect helper for a SQLAlchemy dialect name."""
    if name == "sqlite":
        return SqliteDialect()
    if name == "postgresql":
        return PostgresDialect()
    raise ValueError(f"sqlsearch supports SQLite and PostgreSQL, not '{name}'; set ARGILLA_DATABASE_URL to one of them")
