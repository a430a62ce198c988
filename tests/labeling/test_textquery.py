"""The simple_query_string parser of the search engine and its FTS5 / tsquery renderings (no server needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "argilla_server_plugin"))

from argilla_sqlsearch import textquery as tq

A, B, C = tq.Match(("a",)), tq.Match(("b",)), tq.Match(("c",))


@pytest.mark.parametrize("text, tree", [
    ("a", A),
    ("a b", tq.And((A, B))),
    ("a +b", tq.And((A, B))),
    ("a | b", tq.Or((A, B))),
    ("a b | c", tq.Or((tq.And((A, B)), C))),          # AND binds tighter than |
    ("a (b | c)", tq.And((A, tq.Or((B, C))))),
    ("-a", tq.Not(A)),
    ("a -b", tq.And((A, tq.Not(B)))),
    ("a -(b | c)", tq.And((A, tq.Not(tq.Or((B, C)))))),
    ('"hello world"', tq.Match(("hello", "world"))),
    ('-"hello world"', tq.Not(tq.Match(("hello", "world")))),
    ("summar*", tq.Match(("summar",), prefix=True)),
    ("Well-Known", tq.Match(("well", "known"))),        # split like the SQL tokenizers, lowercased
    ("snake_case", tq.Match(("snake", "case"))),
    ("fuzzy~2", tq.Match(("fuzzy",))),
    ('"a b"~3', tq.Match(("a", "b"))),
    ("Ünïcode", tq.Match(("ünïcode",))),
    ("a - b", tq.And((A, B))),                           # a lone '-' is not an operator
    ("a )b", tq.And((A, B))),                            # stray parenthesis
    ("(a b", tq.And((A, B))),                            # unclosed parenthesis
])
def test_parse(text, tree):
    assert tq.parse(text) == tree


@pytest.mark.parametrize("text", ["", "   ", "?!", "*", '""', "( )", "-", "| |"])
def test_nothing_searchable(text):
    assert tq.parse(text) is None


def test_fts5_single_expression_when_possible():
    plan = tq.fts5_plan(tq.parse('capital "of france" summ* -paris -"big city"'))
    assert plan == tq.Fts5Match('("capital" AND "of france" AND "summ"*) NOT ("paris" OR "big city")')


def test_fts5_column_filter():
    plan = tq.fts5_plan(tq.parse("a | b"), column="c3")
    assert plan == tq.Fts5Match('{c3} : (("a" OR "b"))')


def test_fts5_set_operations_where_fts5_has_no_unary_not():
    assert tq.fts5_plan(tq.parse("-a")) == tq.Fts5Not(tq.Fts5Match('"a"'))
    assert tq.fts5_plan(tq.parse("a | -b")) == tq.Fts5Or((tq.Fts5Match('"a"'), tq.Fts5Not(tq.Fts5Match('"b"'))))


def test_fts5_positive_terms_rank_the_results():
    assert tq.fts5_positive(tq.parse("a -b (c | d*)")) == '"a" OR "c" OR "d"*'
    assert tq.fts5_positive(tq.parse("-a")) is None
    assert tq.fts5_positive(tq.parse("-(-a)")) == '"a"'


def test_tsquery_rendering():
    assert tq.to_tsquery_text(tq.parse('a "b c" d* -e | f')) == "(('a' & ('b' <-> 'c') & 'd':* & !'e') | 'f')"


def test_rendered_text_cannot_inject_syntax():
    tree = tq.parse("""x" OR "y NEAR(z) {c1}: col:* 'q' & !w""")
    for expr in (tq.fts5_plan(tree).expr, tq.to_tsquery_text(tree)):  # type: ignore[union-attr]
        words = [w for w in expr.replace('"', " ").replace("'", " ").split() if w.isalnum()]
        assert all(w.islower() or w.isdigit() or w in ("AND", "OR", "NOT") for w in words)
    assert "{c1}" not in tq.fts5_plan(tree).expr  # type: ignore[union-attr]


def _fts5_rows(plan: tq.Fts5Plan, db, ids: set[int]) -> set[int]:
    """Evaluate a plan the way fulltext.py does: each MATCH a set, combined by set operations."""
    if isinstance(plan, tq.Fts5Match):
        return {row[0] for row in db.execute("SELECT rowid FROM t WHERE t MATCH ?", (plan.expr,))}
    if isinstance(plan, tq.Fts5Not):
        return ids - _fts5_rows(plan.part, db, ids)
    parts = [_fts5_rows(part, db, ids) for part in plan.parts]
    return set.intersection(*parts) if isinstance(plan, tq.Fts5And) else set.union(*parts)


@pytest.mark.parametrize("query, expected", [
    ("capital", {1, 2}),
    ('"capital of" france', {1}),
    ("capit*", {1, 2, 3}),
    ("paris -capital", {4}),
    ("-paris", {2, 3}),
    ("berlin | -capital", {2, 3, 4}),
    ('x" OR "y NEAR(z) {c1}: col:* ^q', set()),  # FTS5 syntax in user text is only ever words
])
def test_fts5_plans_run_in_sqlite(query, expected):
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(c0, c1)")
    db.executemany("INSERT INTO t(rowid, c0, c1) VALUES (?, ?, ?)", [
        (1, "The capital of France", "is Paris"), (2, "The capital of Germany", "Berlin"),
        (3, "Capitalism", "markets"), (4, "Paris Hilton", "celebrity")])
    assert _fts5_rows(tq.fts5_plan(tq.parse(query)), db, {1, 2, 3, 4}) == expected
