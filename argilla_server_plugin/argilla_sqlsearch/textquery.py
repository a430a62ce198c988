"""Parse Elasticsearch ``simple_query_string`` text (as Argilla sends it) and render it for SQL full-text search.

Argilla's Elasticsearch engine sends the search box text as a ``simple_query_string`` with
``default_operator: AND``. The syntax reproduced here:

==========  =====================================================  =====================
syntax      meaning                                                example
==========  =====================================================  =====================
``a b``     both terms (AND is the default operator; ``+`` too)    ``good answer``
``"a b"``   the words next to each other, in this order (phrase)   ``"capital of france"``
``a*``      a word starting with ``a`` (prefix)                    ``summar*``
``-a``      records without ``a`` (also ``-"a b"``, ``-(a | b)``)  ``paris -london``
``a | b``   either term                                            ``cat | dog``
``( )``     grouping                                               ``(cat | dog) food``
==========  =====================================================  =====================

Precedence is the usual one (``-`` binds tightest, then AND, then ``|``); Lucene's own simple parser folds
left to right instead, which only differs for mixes such as ``a b | c``. Fuzziness and slop suffixes
(``~2``) are accepted and ignored. Words are split the way the SQL tokenizers split them (runs of letters and
digits; punctuation and ``_`` separate), so a term like ``well-known`` is searched as the phrase
``"well known"``. Terms with no letter or digit are dropped; a query left with nothing searchable parses
to ``None``.

The tree renders two ways: :func:`to_tsquery_text` gives PostgreSQL ``to_tsquery`` input (which has a
unary NOT), and :func:`fts5_plan` gives SQLite FTS5 ``MATCH`` expressions (whose NOT is binary) wrapped in
set operations where FTS5 alone cannot say it (``-a`` alone, or ``a | -b``). Rendered words contain only
letters and digits and are always quoted, so no user text can inject FTS5 or tsquery syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "And",
    "Fts5Match",
    "Fts5Plan",
    "Match",
    "Not",
    "Or",
    "fts5_plan",
    "fts5_positive",
    "parse",
    "to_tsquery_text",
]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Match:
    """One or more adjacent words (a single term is a one-word match); ``prefix``: the last word is a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class Not:
    node: Node


@dataclass(frozen=True)
class And:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    nodes: tuple[Node, ...]


Node = Match | Not | And | Or


# --------------------------------------------------------------------------------------------- tokenizer
@dataclass(frozen=True)
class _Tok:
    kind: str  # "word" | "phrase" | "or" | "and" | "not" | "(" | ")"
    text: str = ""


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = text.find('"', i + 1)
            end = n if end < 0 else end
            toks.append(_Tok("phrase", text[i + 1:end]))
            i = end + 1
            while i < n and (text[i] == "~" or text[i].isdigit()):  # phrase slop: ignored
                i += 1
        elif ch == "|":
            toks.append(_Tok("or"))
            i += 1
        elif ch == "+":
            toks.append(_Tok("and"))
            i += 1
        elif ch == "-" and (i + 1 < n and not text[i + 1].isspace()):
            toks.append(_Tok("not"))
            i += 1
        elif ch in "()":
            toks.append(_Tok(ch))
            i += 1
        else:
            start = i
            buf = []
            while i < n and not text[i].isspace() and text[i] not in '"|()':
                if text[i] == "\\" and i + 1 < n:
                    buf.append(text[i + 1])
                    i += 2
                    continue
                buf.append(text[i])
                i += 1
            word = "".join(buf)
            if "~" in word:  # fuzziness: ignored
                word = word.split("~", 1)[0]
            if word or i > start:
                toks.append(_Tok("word", word))
    return toks


def _leaf(text: str, allow_prefix: bool) -> Match | None:
    prefix = allow_prefix and text.endswith("*")
    words = tuple(w.lower() for w in _WORD.findall(text))
    if not words:
        return None
    return Match(words=words, prefix=prefix)


# --------------------------------------------------------------------------------------------- parser
class _Parser:
    """Recursive descent: or := and ('|' and)* ; and := unary (['+'] unary)* ; unary := '-' unary | atom."""

    def __init__(self, toks: list[_Tok]):
        self.toks = toks
        self.pos = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def parse_or(self) -> Node | None:
        parts = [self.parse_and()]
        while (tok := self.peek()) is not None and tok.kind == "or":
            self.pos += 1
            parts.append(self.parse_and())
        return _combine(Or, parts)

    def parse_and(self) -> Node | None:
        parts: list[Node | None] = []
        while (tok := self.peek()) is not None and tok.kind not in ("or", ")"):
            if tok.kind == "and":
                self.pos += 1
                continue
            parts.append(self.parse_unary())
        return _combine(And, parts)

    def parse_unary(self) -> Node | None:
        tok = self.peek()
        if tok is not None and tok.kind == "not":
            self.pos += 1
            inner = self.parse_unary()
            return Not(inner) if inner is not None else None
        return self.parse_atom()

    def parse_atom(self) -> Node | None:
        tok = self.peek()
        if tok is None:
            return None
        self.pos += 1
        if tok.kind == "(":
            inner = self.parse_or()
            if (close := self.peek()) is not None and close.kind == ")":
                self.pos += 1
            return inner
        if tok.kind == "phrase":
            return _leaf(tok.text, allow_prefix=False)
        if tok.kind == "word":
            return _leaf(tok.text, allow_prefix=True)
        return None  # a stray ')' or operator: ignored


def _combine(kind: type[And | Or], parts: list[Node | None]) -> Node | None:
    kept: list[Node] = []
    for part in parts:
        if part is None:
            continue
        kept.extend(part.nodes if isinstance(part, kind) else (part,))
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else kind(tuple(kept))


def parse(text: str) -> Node | None:
    """The query tree of ``text``, or None when it holds nothing searchable."""
    parser = _Parser(_tokenize(text))
    node = parser.parse_or()
    while parser.peek() is not None:  # unbalanced ')': parse the rest as further AND clauses
        parser.pos += 1
        rest = parser.parse_or()
        node = _combine(And, [node, rest])
    return node


# --------------------------------------------------------------------------------------------- PostgreSQL
def to_tsquery_text(node: Node) -> str:
    """``to_tsquery`` input for ``node``: ``&``, ``|``, ``!``, ``<->`` for phrases and ``:*`` for prefixes."""
    if isinstance(node, Match):
        quoted = [f"'{w}'" for w in node.words]
        if node.prefix:
            quoted[-1] += ":*"
        return quoted[0] if len(quoted) == 1 else "(" + " <-> ".join(quoted) + ")"
    if isinstance(node, Not):
        return "!" + to_tsquery_text(node.node)
    sep = " & " if isinstance(node, And) else " | "
    return "(" + sep.join(to_tsquery_text(child) for child in node.nodes) + ")"


# --------------------------------------------------------------------------------------------- SQLite FTS5
@dataclass(frozen=True)
class Fts5Match:
    """A set of records given by one FTS5 ``MATCH`` expression."""

    expr: str


@dataclass(frozen=True)
class Fts5And:
    parts: tuple[Fts5Plan, ...]


@dataclass(frozen=True)
class Fts5Or:
    parts: tuple[Fts5Plan, ...]


@dataclass(frozen=True)
class Fts5Not:
    part: Fts5Plan


Fts5Plan = Fts5Match | Fts5And | Fts5Or | Fts5Not


def _fts5_expr(node: Node) -> str | None:
    """One FTS5 expression for ``node``, or None when FTS5's binary NOT cannot express it."""
    if isinstance(node, Match):
        return '"' + " ".join(node.words) + '"' + ("*" if node.prefix else "")
    if isinstance(node, Not):
        return None
    children = [_fts5_expr(child) for child in node.nodes if not isinstance(child, Not)]
    if any(child is None for child in children):
        return None
    if isinstance(node, Or):
        if len(children) != len(node.nodes):
            return None
        return "(" + " OR ".join(children) + ")"  # type: ignore[arg-type]
    negated = [child.node for child in node.nodes if isinstance(child, Not)]
    if not children:
        return None
    expr = "(" + " AND ".join(children) + ")"  # type: ignore[arg-type]
    if negated:
        inner = [_fts5_expr(child) for child in negated]
        if any(child is None for child in inner):
            return None
        expr = f"{expr} NOT ({' OR '.join(inner)})"  # type: ignore[arg-type]
    return expr


def fts5_plan(node: Node, column: str | None = None) -> Fts5Plan:
    """FTS5 ``MATCH`` expressions for ``node``, combined by set operations where one expression cannot do.

    ``column``: restrict every expression to one FTS5 column (a ``{col} : (...)`` filter).
    """
    expr = _fts5_expr(node)
    if expr is not None:
        return Fts5Match(f"{{{column}}} : ({expr})" if column else expr)
    if isinstance(node, Not):
        return Fts5Not(fts5_plan(node.node, column))
    parts = tuple(fts5_plan(child, column) for child in node.nodes)  # type: ignore[union-attr]
    return Fts5And(parts) if isinstance(node, And) else Fts5Or(parts)


def _positive_leaves(node: Node, negated: bool = False) -> list[Match]:
    if isinstance(node, Match):
        return [] if negated else [node]
    if isinstance(node, Not):
        return _positive_leaves(node.node, not negated)
    return [leaf for child in node.nodes for leaf in _positive_leaves(child, negated)]


def fts5_positive(node: Node, column: str | None = None) -> str | None:
    """An FTS5 expression matching any of the query's non-negated terms (ranks results by bm25); None if none."""
    leaves = _positive_leaves(node)
    if not leaves:
        return None
    expr = " OR ".join(_fts5_expr(leaf) for leaf in leaves)  # type: ignore[misc]
    return f"{{{column}}} : ({expr})" if column else expr
