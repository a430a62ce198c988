"""Text search over record fields: SQLite FTS5 kept in step by triggers, or PostgreSQL ``tsvector`` at query time.

**SQLite.** One FTS5 row per record, one FTS5 column per dataset field: ``c0`` holds the dataset's first
field (fields ordered by ``inserted_at, id``), ``c1`` the second, and so on; fields past the 16th share
``c15``. That gives Elasticsearch's semantics without per-dataset tables: a query over all fields asks each
term in any column (``a b`` matches ``a`` in the prompt and ``b`` in a response), a phrase never spans two
fields, and a search in one field is a column filter (``{c2} : (...)``). Ranking is FTS5's ``bm25``.

The index lives in the same database file and is written by SQLite triggers on ``records`` inside the
transaction that writes the record, so it can never be stale, Argilla's own code needs no hook, and deleting
a dataset (a cascade) clears its rows. The FTS5 table is an external-content table over
``sqlsearch_text(id INTEGER PRIMARY KEY, record_id UNIQUE, c0..c15)``; the integer key makes it safe from
``VACUUM`` renumbering rowids. Text of a field: the string itself, or every string inside a chat or custom
field's JSON (``json_tree``); image fields are not indexed (Elasticsearch does not index them either).
:func:`install_sqlite` creates all of it (idempotent, rebuilt when :data:`SCHEMA_VERSION` changes) and
indexes existing records.

**PostgreSQL.** ``to_tsvector('simple', json)`` over a JSON object of the record's non-image fields (it
reads only string values and leaves a position gap between values, so phrases stay inside one field), matched
with ``@@`` against a ``to_tsquery`` built from the parsed query, ranked with ``ts_rank``. The ``simple``
configuration lowercases and does not stem, like FTS5's ``unicode61`` (which also folds diacritics). No index is kept: a sequential scan over one dataset is fast at annotation scale.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from argilla_server.models import Field, Record
from sqlalchemy import String, and_, column, false, func, literal, literal_column, not_, or_, select, table
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from argilla_sqlsearch import textquery as tq

__all__ = ["SCHEMA_VERSION", "TextSearch", "field_columns", "install_sqlite", "text_search"]

SCHEMA_VERSION = "1"
COLUMNS = 16
TEXT_TABLE = "sqlsearch_text"
FTS_TABLE = "sqlsearch_fts"
META_TABLE = "sqlsearch_meta"

_COLS = [f"c{i}" for i in range(COLUMNS)]


# ------------------------------------------------------------------------------------------- SQLite schema
def _field_text_sql(row: str, column: int) -> str:
    """SQL computing FTS column ``column`` of record row ``row`` (``NEW`` in a trigger, ``r`` in the backfill)."""
    position = (
        "(SELECT count(*) FROM fields f2 WHERE f2.dataset_id = f.dataset_id AND "
        "(f2.inserted_at < f.inserted_at OR (f2.inserted_at = f.inserted_at AND f2.id < f.id)))"
    )
    strings = (
        "CASE je.type WHEN 'text' THEN je.value WHEN 'null' THEN NULL "
        "WHEN 'object' THEN (SELECT group_concat(t.atom, ' ') FROM json_tree(je.value) t WHERE t.type = 'text') "
        "WHEN 'array' THEN (SELECT group_concat(t.atom, ' ') FROM json_tree(je.value) t WHERE t.type = 'text') "
        "ELSE CAST(je.value AS TEXT) END"
    )
    return (
        f"(SELECT group_concat({strings}, ' ') FROM json_each({row}.fields) je "
        f"JOIN fields f ON f.dataset_id = {row}.dataset_id AND f.name = je.key "
        f"WHERE json_extract(f.settings, '$.type') IS NOT 'image' AND min({position}, {COLUMNS - 1}) = {column})"
    )


def _insert_text_sql(row: str) -> str:
    exprs = ", ".join(_field_text_sql(row, i) for i in range(COLUMNS))
    source = "" if row == "NEW" else " FROM records r"
    return f"INSERT INTO {TEXT_TABLE}(record_id, {', '.join(_COLS)}) SELECT {row}.id, {exprs}{source}"


def _schema_statements() -> list[str]:
    cols = ", ".join(_COLS)
    new_cols = ", ".join(f"new.{c}" for c in _COLS)
    old_cols = ", ".join(f"old.{c}" for c in _COLS)
    text_columns = ", ".join(f"{c} TEXT" for c in _COLS)
    return [
        f"CREATE TABLE {TEXT_TABLE} (id INTEGER PRIMARY KEY, record_id CHAR(32) NOT NULL UNIQUE, {text_columns})",
        (f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5({cols}, content='{TEXT_TABLE}', content_rowid='id', "
         "tokenize='unicode61 remove_diacritics 2')"),
        (f"CREATE TRIGGER {TEXT_TABLE}_ai AFTER INSERT ON {TEXT_TABLE} BEGIN "
         f"INSERT INTO {FTS_TABLE}(rowid, {cols}) VALUES (new.id, {new_cols}); END"),
        (f"CREATE TRIGGER {TEXT_TABLE}_ad AFTER DELETE ON {TEXT_TABLE} BEGIN "
         f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, {cols}) VALUES ('delete', old.id, {old_cols}); END"),
        f"CREATE TRIGGER sqlsearch_records_ai AFTER INSERT ON records BEGIN {_insert_text_sql('NEW')}; END",
        (f"CREATE TRIGGER sqlsearch_records_au AFTER UPDATE OF fields ON records BEGIN "
         f"DELETE FROM {TEXT_TABLE} WHERE record_id = OLD.id; {_insert_text_sql('NEW')}; END"),
        (f"CREATE TRIGGER sqlsearch_records_ad AFTER DELETE ON records BEGIN "
         f"DELETE FROM {TEXT_TABLE} WHERE record_id = OLD.id; END"),
    ]


def _drop_statements() -> list[str]:
    return [
        "DROP TRIGGER IF EXISTS sqlsearch_records_ai",
        "DROP TRIGGER IF EXISTS sqlsearch_records_au",
        "DROP TRIGGER IF EXISTS sqlsearch_records_ad",
        f"DROP TABLE IF EXISTS {FTS_TABLE}",
        f"DROP TABLE IF EXISTS {TEXT_TABLE}",
    ]


def install_sqlite(conn: Connection) -> bool:
    """Create the FTS5 index, its triggers and the rows of existing records; True when it was (re)built.

    Idempotent: does nothing when the installed schema version is current. Run it after Argilla's migrations,
    inside one transaction (``engine.begin()``).
    """
    conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    row = conn.exec_driver_sql(f"SELECT value FROM {META_TABLE} WHERE key = 'fulltext_version'").fetchone()
    if row is not None and row[0] == SCHEMA_VERSION:
        return False
    for statement in _drop_statements() + _schema_statements():
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(_insert_text_sql("r"))
    conn.exec_driver_sql(
        f"INSERT INTO {META_TABLE}(key, value) VALUES ('fulltext_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (SCHEMA_VERSION,),
    )
    return True


# ------------------------------------------------------------------------------------------- query side
class TextSearch:
    """A parsed text query turned into a condition on ``records`` and a relevance score."""

    def __init__(self, condition: ColumnElement[bool], score: Any | None, score_join: Any | None):
        self.condition = condition
        self.score = score  # SQL expression of the relevance score (higher is better), or None
        self.score_join = score_join  # (subquery, on-clause) to LEFT JOIN for the score, or None


async def field_columns(db: Any, dataset_id: UUID) -> list[tuple[str, str]]:
    """The dataset's fields as (name, type), in the order that maps them to FTS columns."""
    rows = (
        await db.execute(
            select(Field.name, Field.settings).where(Field.dataset_id == dataset_id).order_by(Field.inserted_at, Field.id)
        )
    ).all()
    return [(name, str((settings or {}).get("type", "text"))) for name, settings in rows]


_TEXT = table(TEXT_TABLE, column("id"), column("record_id"))
_FTS = table(FTS_TABLE, column("rowid"))


def _match(expr: str) -> ColumnElement[bool]:
    return literal_column(FTS_TABLE).op("MATCH")(literal(expr, String))


def _fts_records(expr: str) -> Any:
    return select(_TEXT.c.record_id).select_from(_TEXT.join(_FTS, _FTS.c.rowid == _TEXT.c.id)).where(_match(expr))


def _sqlite_condition(plan: tq.Fts5Plan) -> ColumnElement[bool]:
    if isinstance(plan, tq.Fts5Match):
        return Record.id.in_(_fts_records(plan.expr))
    if isinstance(plan, tq.Fts5Not):
        return not_(_sqlite_condition(plan.part))
    parts = [_sqlite_condition(part) for part in plan.parts]
    return and_(*parts) if isinstance(plan, tq.Fts5And) else or_(*parts)


def _sqlite_search(node: tq.Node, fields: list[tuple[str, str]], field: str | None) -> TextSearch:
    column = None
    if field is not None:
        names = [name for name, _ in fields]
        column = _COLS[min(names.index(field), COLUMNS - 1)] if field in names else None
        if column is None:
            raise ValueError(f"field '{field}' is not defined in this dataset")
    condition = _sqlite_condition(tq.fts5_plan(node, column))
    positive = tq.fts5_positive(node, column)
    if positive is None:
        return TextSearch(condition, None, None)
    scored = (
        select(_TEXT.c.record_id.label("record_id"), (-func.bm25(literal_column(FTS_TABLE))).label("score"))
        .select_from(_TEXT.join(_FTS, _FTS.c.rowid == _TEXT.c.id))
        .where(_match(positive))
        .subquery("fts_score")
    )
    # record_id in sqlsearch_text is a copy of records.id as stored, so the two compare as stored.
    on = Record.id == scored.c.record_id
    return TextSearch(condition, func.coalesce(scored.c.score, 0.0), (scored, on))


def _postgres_search(node: tq.Node, fields: list[tuple[str, str]], field: str | None) -> TextSearch:
    searched = [name for name, kind in fields if kind != "image" and (field is None or name == field)]
    if field is not None and field not in [name for name, _ in fields]:
        raise ValueError(f"field '{field}' is not defined in this dataset")
    if not searched:
        return TextSearch(false(), None, None)
    # One JSON object of the searched fields: to_tsvector(json) indexes only its string values and leaves a
    # position gap between two values, so a phrase cannot span two fields (or two chat messages).
    pairs = []
    for name in searched:
        pairs.extend([literal(name, String), func.json_extract_path(Record.fields, literal(name, String))])
    vector = func.to_tsvector(literal_column("'simple'::regconfig"), func.json_build_object(*pairs))
    query = func.to_tsquery(literal_column("'simple'::regconfig"), literal(tq.to_tsquery_text(node), String))
    return TextSearch(vector.op("@@")(query), func.ts_rank(vector, query), None)


def text_search(dialect: str, query_text: str, fields: list[tuple[str, str]], field: str | None) -> TextSearch:
    """The text condition for ``query_text`` (simple_query_string syntax); a query without any searchable word
    matches nothing, as Elasticsearch's does."""
    node = tq.parse(query_text)
    if node is None:
        return TextSearch(false(), None, None)
    if dialect == "sqlite":
        return _sqlite_search(node, fields, field)
    return _postgres_search(node, fields, field)
