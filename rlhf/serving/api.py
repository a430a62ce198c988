"""The HTTP API: OpenAI-compatible chat (``/v1/chat/completions``, streamed or whole; ``/v1/models``), feedback
(``/v1/feedback``), the admin export (``/v1/admin/export``) and Prometheus metrics (``/metrics``).

:class:`ChatService` holds the logic (keys, limits, guardrails, generation, storing, implicit signals) and
:func:`build_api` the FastAPI routes over it; the Ray Serve deployment (:mod:`rlhf.serving.deployment`) builds
one per replica, and tests drive the same app in process. Every refusal is a 4xx with one line in OpenAI's error
shape (``{"error": {"message", "type", "code"}}``) and changes nothing in the store.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from rlhf.serving.chat import ChatEngine, Generation
from rlhf.serving.export import export_rows
from rlhf.serving.guards import load_checks, run_checks
from rlhf.serving.monitoring import prometheus_text
from rlhf.serving.settings import AuthSettings, GuardSettings, LimitSettings, ServedModel, SignalSettings
from rlhf.serving.signals import asks_for_human, conversation_id, is_rephrase, user_turns
from rlhf.serving.store import FeedbackStore, ReplyRecord, UnknownReply, new_reply_id

__all__ = ["ApiError", "ChatService", "build_api"]


class ApiError(Exception):
    """A refused request: HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """The OpenAI chat fields this server honours; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    user: str | None = Field(None, max_length=256)
    metadata: dict[str, str] | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"] | None = None
    escalate: bool = False
    comment: str | None = None
    human_reply: str | None = None
    event_id: str | None = Field(None, min_length=1, max_length=100)


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


class ChatService:
    """Everything a request goes through, independent of the HTTP framework."""

    def __init__(self, model: ServedModel, limits: LimitSettings, auth: AuthSettings, store: FeedbackStore,
                 guards: GuardSettings, signals: SignalSettings, engine: ChatEngine,
                 categorize: Callable[[str], str]) -> None:
        self.model, self.limits, self.auth, self.store = model, limits, auth, store
        self.guards, self.signals, self.engine, self.categorize = guards, signals, engine, categorize
        self.prompt_checks = load_checks(guards.prompt_checks)
        self.reply_checks = load_checks(guards.reply_checks)
        self._calls: dict[str, deque[float]] = defaultdict(deque)

    # -- gates ----------------------------------------------------------------------------------------------
    def authorize(self, header: str | None, admin: bool = False) -> str:
        """The key of a ``Bearer`` header, checked for the route; 401 without a valid key, 403 for a chat key
        on an admin route."""
        if not header or not header.startswith("Bearer "):
            raise ApiError(401, "missing API key; send 'Authorization: Bearer KEY'", "missing_api_key")
        key = header.removeprefix("Bearer ").strip()
        if key == self.auth.admin_key:
            return key
        if key not in self.auth.chat_keys:
            raise ApiError(401, "invalid API key", "invalid_api_key")
        if admin:
            raise ApiError(403, "this route needs the admin key; a chat key may only chat and send feedback",
                           "admin_only")
        return key

    def rate_limit(self, key: str) -> None:
        now = time.monotonic()
        calls = self._calls[key]
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= self.limits.requests_per_minute:
            raise ApiError(429, f"rate limit of {self.limits.requests_per_minute} requests per minute reached; "
                                "retry later", "rate_limited")
        calls.append(now)

    def parse(self, body: bytes, schema: type[BaseModel]) -> Any:
        if len(body) > self.limits.max_body_bytes:
            raise ApiError(413, f"request body is {len(body)} bytes, the limit is {self.limits.max_body_bytes}",
                           "body_too_large")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"malformed JSON: {err.__class__.__name__} at position "
                                f"{getattr(err, 'pos', getattr(err, 'start', 0))}", "invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_request")
        try:
            return schema.model_validate(data)
        except ValidationError as err:
            raise ApiError(400, f"invalid request: {_first_error(err)}", "invalid_request") from None

    # -- chat -----------------------------------------------------------------------------------------------
    def prepare_chat(self, req: ChatRequest) -> dict[str, Any]:
        """Check a chat request against the limits and guardrails; returns what generation and storing need."""
        if req.model not in (None, self.model.name):
            raise ApiError(404, f"model {req.model!r} is not served here; use {self.model.name!r} (GET /v1/models)",
                           "model_not_found")
        if len(req.messages) > self.limits.max_messages:
            raise ApiError(400, f"{len(req.messages)} messages, the limit is {self.limits.max_messages}",
                           "too_many_messages")
        if req.messages[-1].role != "user":
            raise ApiError(400, "the last message must be the user's", "invalid_request")
        max_tokens = req.max_completion_tokens or req.max_tokens or self.model.max_tokens
        if max_tokens > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens {max_tokens} is above the server's limit {self.limits.max_tokens}",
                           "max_tokens_too_large")
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        if self.model.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.model.system_prompt})
        n_prompt = len(self.engine.prompt_ids(messages))
        limit = min(self.limits.max_prompt_tokens, self.engine.context - max_tokens)
        if n_prompt > limit:
            raise ApiError(413, f"the conversation is {n_prompt} tokens, the limit is {limit} (with max_tokens "
                                f"{max_tokens})", "prompt_too_long")
        flags = run_checks(self.prompt_checks, messages[-1]["content"])
        blocked = sorted(set(flags) & set(self.guards.block_flags))
        if blocked:
            raise ApiError(400, f"refused by guardrail: {', '.join(blocked)}", "guardrail")
        given = (req.metadata or {}).get("conversation_id")
        return {"messages": messages, "flags": flags, "max_tokens": max_tokens, "user": req.user,
                "conversation_id": conversation_id(req.user, messages, given),
                "temperature": self.model.temperature if req.temperature is None else req.temperature,
                "top_p": self.model.top_p if req.top_p is None else req.top_p}

    def finish_chat(self, plan: dict[str, Any], reply_id: str, gen: Generation, started: float) -> dict[str, Any]:
        """Store the reply (scrubbed) and the implicit signals it reveals about the previous one."""
        messages = plan["messages"]
        flags = sorted(set(plan["flags"]) | set(run_checks(self.reply_checks, gen.text)))
        previous = self.store.last_reply_of(plan["conversation_id"])
        turns = user_turns(messages)
        self.store.add_reply(ReplyRecord(
            id=reply_id, conversation_id=plan["conversation_id"], turn=len(turns), user=plan["user"],
            model=self.model.name, messages=messages, reply=gen.text, category=self.categorize(turns[0]),
            latency_ms=(time.perf_counter() - started) * 1000, prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens, finish_reason=gen.finish_reason, flags=flags))
        if previous is not None and len(turns) >= 2:
            if is_rephrase(turns[:-1], turns[-1], self.signals.rephrase_similarity):
                self.store.add_feedback(previous["id"], "rephrase", source="implicit",
                                        event_id=f"rephrase:{previous['id']}")
            if asks_for_human(turns[-1]):
                self.store.add_feedback(previous["id"], "ask_human", source="implicit",
                                        event_id=f"ask_human:{previous['id']}")
        return {"flags": flags}

    def chat(self, req: ChatRequest) -> dict[str, Any]:
        started = time.perf_counter()
        plan = self.prepare_chat(req)
        gen = self.engine.generate(plan["messages"], plan["temperature"], plan["top_p"], plan["max_tokens"])
        reply_id = new_reply_id()
        self.finish_chat(plan, reply_id, gen, started)
        return {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": self.model.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                             "finish_reason": gen.finish_reason}],
                "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                          "total_tokens": gen.prompt_tokens + gen.completion_tokens},
                "metadata": {"conversation_id": plan["conversation_id"]}}

    def chat_stream(self, req: ChatRequest) -> Iterator[str]:
        """Server-sent events in OpenAI's chunk format, ``data: [DONE]`` last; the reply is stored at the end."""
        started = time.perf_counter()
        plan = self.prepare_chat(req)
        reply_id = new_reply_id()
        created = int(time.time())

        def chunk(delta: dict, finish: str | None) -> str:
            return "data: " + json.dumps({"id": reply_id, "object": "chat.completion.chunk", "created": created,
                                          "model": self.model.name, "choices": [
                                              {"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        def events() -> Iterator[str]:
            yield chunk({"role": "assistant", "content": ""}, None)
            for piece in self.engine.stream(plan["messages"], plan["temperature"], plan["top_p"], plan["max_tokens"]):
                if isinstance(piece, Generation):
                    self.finish_chat(plan, reply_id, piece, started)
                    yield chunk({}, piece.finish_reason)
                else:
                    yield chunk({"content": piece}, None)
            yield "data: [DONE]\n\n"

        return events()

    # -- feedback and export --------------------------------------------------------------------------------
    def feedback(self, req: FeedbackRequest, admin: bool) -> dict[str, Any]:
        events: list[tuple[str, dict[str, Any]]] = []
        if req.rating:
            events.append(("thumbs_up" if req.rating == "up" else "thumbs_down", {}))
        if req.escalate or req.human_reply:
            events.append(("escalate", {"human_reply": req.human_reply}))
        if req.comment:
            events.append(("comment", {"comment": req.comment}))
        if not events:
            raise ApiError(400, "the feedback carries nothing; send rating, escalate, comment or human_reply",
                           "empty_feedback")
        for text in (req.comment, req.human_reply):
            if text and len(text) > self.limits.max_comment_chars:
                raise ApiError(413, f"a text of {len(text)} characters, the limit is {self.limits.max_comment_chars}",
                               "text_too_long")
        if req.human_reply and not admin:
            raise ApiError(403, "human_reply is written by support staff; send it with the admin key", "admin_only")
        if self.store.reply(req.reply_id) is None:
            raise ApiError(404, f"unknown reply id {req.reply_id!r}; send the id of a reply this server gave",
                           "unknown_reply")
        base = req.event_id or uuid.uuid4().hex
        stored, duplicates = [], 0
        for kind, extra in events:
            try:
                row, dup = self.store.add_feedback(req.reply_id, kind, event_id=f"{base}:{kind}", **extra)
            except UnknownReply:  # forgotten between the check and the write
                raise ApiError(404, f"unknown reply id {req.reply_id!r}", "unknown_reply") from None
            stored.append({"id": row, "kind": kind, "duplicate": dup})
            duplicates += dup
        return {"reply_id": req.reply_id, "events": stored, "duplicates": duplicates}

    def export(self, since: float, until: float) -> list[dict[str, Any]]:
        """The export rows of the window; recorded as ``api:<UTC time>`` so ``rlhf feedback forget`` can name
        this export too."""
        rows = export_rows(self.store, since, until, abandon_after_s=self.signals.abandon_after_s)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.store.record_export(f"api:{stamp}", [rep["id"] for row in rows for rep in row["metadata"]["replies"]])
        return rows

    def metrics(self) -> str:
        return prometheus_text(self.store)


def build_api(service: ChatService):
    """The FastAPI app over ``service``; every request (refusals included) is logged for monitoring."""
    app = FastAPI(title="rlhf-pipeline chat", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid_query(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        response = error(ApiError(400, f"invalid request: {where}: {first['msg']}", "invalid_request"))
        await run_in_threadpool(service.store.log_request, request.url.path, response.status_code, 0.0)
        return response

    def error(err: ApiError) -> JSONResponse:
        kind = "invalid_request_error" if err.status < 500 else "server_error"
        return JSONResponse({"error": {"message": err.message, "type": kind, "code": err.code}},
                            status_code=err.status)

    async def logged(route: str, request_started: float, call) -> Any:
        try:
            response = await call()
        except ApiError as err:
            response = error(err)
        await run_in_threadpool(service.store.log_request, route, response.status_code,
                                (time.perf_counter() - request_started) * 1000)
        return response

    @app.get("/v1/models")
    async def models(request: Request):
        async def call():
            service.authorize(request.headers.get("authorization"))
            return JSONResponse({"object": "list", "data": [
                {"id": service.model.name, "object": "model", "created": 0, "owned_by": "rlhf-pipeline"}]})
        return await logged("/v1/models", time.perf_counter(), call)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        async def call():
            key = service.authorize(request.headers.get("authorization"))
            service.rate_limit(key)
            req = service.parse(await request.body(), ChatRequest)
            if req.stream:
                events = await run_in_threadpool(service.chat_stream, req)
                return StreamingResponse(events, media_type="text/event-stream")
            return JSONResponse(await run_in_threadpool(service.chat, req))
        return await logged("/v1/chat/completions", time.perf_counter(), call)

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        async def call():
            key = service.authorize(request.headers.get("authorization"))
            service.rate_limit(key)
            req = service.parse(await request.body(), FeedbackRequest)
            result = await run_in_threadpool(service.feedback, req, key == service.auth.admin_key)
            return JSONResponse(result)
        return await logged("/v1/feedback", time.perf_counter(), call)

    @app.get("/v1/admin/export")
    async def export(request: Request, since: float = 0.0, until: float | None = None):
        async def call():
            service.authorize(request.headers.get("authorization"), admin=True)
            rows = await run_in_threadpool(service.export, since, time.time() if until is None else until)
            return JSONResponse({"object": "list", "data": rows})
        return await logged("/v1/admin/export", time.perf_counter(), call)

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(await run_in_threadpool(service.metrics),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/chat")
    async def chat_page():
        from importlib.resources import files

        page = files("rlhf.serving").joinpath("static/chat.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' "
                                           "'unsafe-inline'; style-src 'unsafe-inline'; object-src 'none'"})

    @app.get("/healthz")
    async def health():
        return PlainTextResponse("ok")

    return app
