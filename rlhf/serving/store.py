"""The feedback store: every served reply, every feedback event and every export, in SQLite by default or
PostgreSQL by URL (SQLAlchemy Core, so one code path serves both; the Serve replicas of one app share it).

Nothing reaches a table unscrubbed: the PII scrubber runs inside :meth:`FeedbackStore.add_reply` and
:meth:`FeedbackStore.add_feedback` on every text (conversation, reply, comment, human reply), and users are kept
only as a keyed hash of the id the client sent (:func:`user_key`), which is what ``rlhf feedback forget`` looks
up. Feedback events carry an ``event_id``: a client retry with the same id is stored once.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rlhf.core.errors import UserError
from rlhf.data.pii import ScrubResult, load_scrubber, run_scrubber

__all__ = ["EXPLICIT_KINDS", "FeedbackStore", "ReplyRecord", "UnknownReply", "store_folder", "user_key"]

# What a client may send on /v1/feedback; the server adds the implicit kinds ("rephrase", "ask_human",
# "abandon") itself.
EXPLICIT_KINDS: tuple[str, ...] = ("thumbs_up", "thumbs_down", "escalate", "comment")
IMPLICIT_KINDS: tuple[str, ...] = ("rephrase", "ask_human", "abandon")

_META = sa.MetaData()
REPLIES = sa.Table(
    "replies", _META,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("conversation_id", sa.String(64), nullable=False, index=True),
    sa.Column("turn", sa.Integer, nullable=False),
    sa.Column("user_key", sa.String(64), nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("messages", sa.Text, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("reply", sa.Text, nullable=False),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("finish_reason", sa.String(16), nullable=False),
    sa.Column("flags", sa.Text, nullable=False),
    sa.Column("rm_score", sa.Float, nullable=True),
)
FEEDBACK = sa.Table(
    "feedback", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(128), nullable=False, unique=True),
    sa.Column("reply_id", sa.String(64), sa.ForeignKey("replies.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("human_reply", sa.Text, nullable=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
)
REQUESTS = sa.Table(
    "requests", _META,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("route", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
)
EXPORT_ITEMS = sa.Table(
    "export_items", _META,
    sa.Column("export_path", sa.Text, nullable=False),
    sa.Column("reply_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_key", sa.String(64), nullable=False, index=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("forgotten", sa.Float, nullable=True),
)


class UnknownReply(KeyError):
    """Feedback names a reply id the store does not hold."""


def user_key(user: str | None) -> str:
    """The only form in which a user is stored: a hash of the id the client sent ("anonymous" when none)."""
    return hashlib.sha256(f"rlhf-user:{user or 'anonymous'}".encode()).hexdigest()[:32]


def store_folder(url: str) -> Path:
    """Where files that belong with a store go (exports, monitor reports): beside a SQLite file, else
    ``runs/serve``."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).expanduser().parent
    return Path("runs/serve")


def new_reply_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


@dataclass
class ReplyRecord:
    """One served reply and what the server measured of it; texts are scrubbed by the store."""

    id: str
    conversation_id: str
    turn: int
    user: str | None
    model: str
    messages: list[dict[str, str]]
    reply: str
    category: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    flags: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:  # WAL: several Serve replicas write at once
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class FeedbackStore:
    """Replies, feedback, request log and exports behind one SQLAlchemy engine."""

    def __init__(self, url: str, scrubber: str | Callable[[str], ScrubResult | str] = "default") -> None:
        if scrubber == "none":
            raise UserError("the feedback store never keeps unscrubbed text; name a scrubber other than 'none'")
        self.url = url
        self.scrub_fn = load_scrubber(scrubber) if isinstance(scrubber, str) else scrubber
        try:
            self.engine = _engine(url)
            _META.create_all(self.engine)
        except (sa.exc.OperationalError, sa.exc.ArgumentError, ModuleNotFoundError) as err:
            raise UserError(f"cannot open the feedback store {url} ({str(err).splitlines()[0]}); check store.url")

    def scrub(self, text: str) -> str:
        return run_scrubber(self.scrub_fn, text).text

    # -- writes ---------------------------------------------------------------------------------------------
    def add_reply(self, rec: ReplyRecord) -> None:
        messages = [{"role": m["role"], "content": self.scrub(m["content"])} for m in rec.messages]
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        with self.engine.begin() as conn:
            conn.execute(REPLIES.insert().values(
                id=rec.id, conversation_id=rec.conversation_id, turn=rec.turn, user_key=user_key(rec.user),
                model=rec.model, created=rec.created, messages=json.dumps(messages), prompt=prompt,
                reply=self.scrub(rec.reply), category=rec.category, latency_ms=rec.latency_ms,
                prompt_tokens=rec.prompt_tokens, completion_tokens=rec.completion_tokens,
                finish_reason=rec.finish_reason, flags=json.dumps(sorted(set(rec.flags)))))

    def add_feedback(self, reply_id: str, kind: str, *, source: str = "explicit", event_id: str | None = None,
                     comment: str | None = None, human_reply: str | None = None,
                     created: float | None = None) -> tuple[int, bool]:
        """Store one event; returns its row id and whether it was already stored (same ``event_id``)."""
        if kind not in EXPLICIT_KINDS + IMPLICIT_KINDS:
            raise ValueError(f"unknown feedback kind {kind!r}; use one of {', '.join(EXPLICIT_KINDS)}")
        event_id = event_id or uuid.uuid4().hex
        with self.engine.begin() as conn:
            if conn.execute(sa.select(REPLIES.c.id).where(REPLIES.c.id == reply_id)).first() is None:
                raise UnknownReply(reply_id)
            row = conn.execute(sa.select(FEEDBACK.c.id).where(FEEDBACK.c.event_id == event_id)).first()
            if row is not None:
                return int(row[0]), True
            try:
                result = conn.execute(FEEDBACK.insert().values(
                    event_id=event_id, reply_id=reply_id, kind=kind, source=source,
                    comment=self.scrub(comment) if comment else None,
                    human_reply=self.scrub(human_reply) if human_reply else None,
                    created=time.time() if created is None else created))
                return int(result.inserted_primary_key[0]), False
            except sa.exc.IntegrityError:  # the same event_id raced in from another replica
                pass
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(FEEDBACK.c.id).where(FEEDBACK.c.event_id == event_id)).scalar_one()), True

    def log_request(self, route: str, status: int, latency_ms: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(REQUESTS.insert().values(created=time.time(), route=route, status=status,
                                                  latency_ms=latency_ms))

    def set_rm_scores(self, scores: dict[str, float]) -> None:
        with self.engine.begin() as conn:
            for reply_id, score in scores.items():
                conn.execute(REPLIES.update().where(REPLIES.c.id == reply_id).values(rm_score=float(score)))

    def derive_abandoned(self, after_s: float, now: float | None = None) -> int:
        """Add an implicit ``abandon`` event to the last reply of every conversation that went quiet for
        ``after_s`` after that reply got thumbs-down or a rephrase; returns how many were added."""
        now = time.time() if now is None else now
        added = 0
        for row in self._last_replies(now - after_s):
            kinds = {e["kind"] for e in self.feedback_of([row["id"]])}
            if kinds & {"thumbs_down", "rephrase"} and "thumbs_up" not in kinds:
                _, dup = self.add_feedback(row["id"], "abandon", source="implicit", event_id=f"abandon:{row['id']}",
                                           created=now)
                added += not dup
        return added

    def record_export(self, path: str, reply_ids: Iterable[str]) -> None:
        ids = list(reply_ids)
        with self.engine.begin() as conn:
            keys = dict(conn.execute(sa.select(REPLIES.c.id, REPLIES.c.user_key).where(REPLIES.c.id.in_(ids))).all())
            if keys:
                conn.execute(EXPORT_ITEMS.insert(), [{"export_path": path, "reply_id": rid, "user_key": key,
                                                      "created": time.time(), "forgotten": None}
                                                     for rid, key in keys.items()])

    def forget(self, user: str) -> dict[str, Any]:
        """Erase a user's replies and feedback; mark (not delete) the export rows made from them, and return
        the export files that hold their data."""
        key = user_key(user)
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.execute(sa.select(REPLIES.c.id).where(REPLIES.c.user_key == key))]
            feedback = conn.execute(FEEDBACK.delete().where(FEEDBACK.c.reply_id.in_(ids))).rowcount if ids else 0
            replies = conn.execute(REPLIES.delete().where(REPLIES.c.user_key == key)).rowcount
            paths = sorted({r[0] for r in conn.execute(sa.select(EXPORT_ITEMS.c.export_path).where(
                EXPORT_ITEMS.c.user_key == key))})
            conn.execute(EXPORT_ITEMS.update().where((EXPORT_ITEMS.c.user_key == key)
                                                     & EXPORT_ITEMS.c.forgotten.is_(None)).values(forgotten=time.time()))
        return {"replies": replies, "feedback": feedback, "exports": paths}

    # -- reads ----------------------------------------------------------------------------------------------
    def reply(self, reply_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(REPLIES).where(REPLIES.c.id == reply_id)).mappings().first()
        return _reply_row(row) if row else None

    def last_reply_of(self, conversation_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(REPLIES).where(REPLIES.c.conversation_id == conversation_id)
                               .order_by(REPLIES.c.turn.desc(), REPLIES.c.created.desc())).mappings().first()
        return _reply_row(row) if row else None

    def replies(self, since: float = 0.0, until: float | None = None) -> list[dict[str, Any]]:
        return [_reply_row(r) for r in self._window(REPLIES, REPLIES.c.created, since, until)]

    def feedback_of(self, reply_ids: list[str]) -> list[dict[str, Any]]:
        if not reply_ids:
            return []
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(FEEDBACK).where(FEEDBACK.c.reply_id.in_(reply_ids))
                                                  .order_by(FEEDBACK.c.id)).mappings()]

    def feedback(self, since: float = 0.0, until: float | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self._window(FEEDBACK, FEEDBACK.c.id, since, until)]

    def requests(self, since: float = 0.0, until: float | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self._window(REQUESTS, REQUESTS.c.id, since, until)]

    def _window(self, table: sa.Table, order, since: float, until: float | None) -> list:
        """The rows of ``table`` created in [since, until), in ``order``."""
        query = sa.select(table).where(table.c.created >= since)
        if until is not None:
            query = query.where(table.c.created < until)
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(order)).mappings())

    def export_items(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(EXPORT_ITEMS)).mappings()]

    def _last_replies(self, before: float) -> list[dict[str, Any]]:
        latest = (sa.select(REPLIES.c.conversation_id, sa.func.max(REPLIES.c.turn).label("turn"))
                  .group_by(REPLIES.c.conversation_id).subquery())
        query = (sa.select(REPLIES).join(latest, (REPLIES.c.conversation_id == latest.c.conversation_id)
                                         & (REPLIES.c.turn == latest.c.turn))
                 .where(REPLIES.c.created < before))
        with self.engine.connect() as conn:
            return [_reply_row(r) for r in conn.execute(query).mappings()]


def _reply_row(row) -> dict[str, Any]:
    out = dict(row)
    out["messages"] = json.loads(out["messages"])
    out["flags"] = json.loads(out["flags"])
    return out
