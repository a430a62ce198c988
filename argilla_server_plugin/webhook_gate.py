"""Build a webhook event only when an enabled webhook subscribes to it.

Argilla 2.8 calls ``notify_record_event`` once per record it creates or whose status changes, and
``notify_response_event`` / ``notify_dataset_event`` on every response and dataset change. Each call first
builds the event (a query of the dataset or response with five to seven ``selectinload`` relationships and a
pydantic dump of the whole record), and only then lists the enabled webhooks, to enqueue nothing when there
are none. Measured on a service with no webhook (SQLite, one server worker, 2,000 ``ranking-v1`` records in
batches of 500): the events took 16.2 s of the 17.6 s spent creating the records, 8 ms per record.

:func:`install` wraps the three ``notify_*_event`` functions so that they first read which events the enabled
webhooks subscribe to, and return ``[]`` (what the original returns when no webhook wants the event) without
building anything when none does; otherwise the original runs unchanged. The subscribed events are read once
per database session (one request, or one background job) and kept in the session's ``info``: a webhook
created while a request is running is seen from the next request on. Argilla binds these functions by name
in the modules that call them (``from ... import notify_record_event as notify_record_event_v1``), so every
``argilla_server`` module attribute that is the original function is replaced. Argilla's installed files are
not touched.

Run :func:`install` in every process that serves requests or runs jobs (the launchers and ``argilla_app``),
after importing ``argilla_server``'s app or jobs.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["install", "subscribed_events"]

_CACHE_KEY = "sqlsearch.webhook_events"
# the modules that call the notify functions (imported so that their names are bound before the rebinding)
_CALLERS = (
    "argilla_server.bulk.records_bulk",
    "argilla_server.contexts.datasets",
    "argilla_server.contexts.distribution",
    "argilla_server.contexts.records",
)
_NOTIFIERS = (
    ("argilla_server.webhooks.v1.records", "notify_record_event"),
    ("argilla_server.webhooks.v1.responses", "notify_response_event"),
    ("argilla_server.webhooks.v1.datasets", "notify_dataset_event"),
)


async def subscribed_events(db: Any) -> frozenset[str]:
    """The events (``record.created``, ...) some enabled webhook subscribes to; read once per session."""
    cached = db.info.get(_CACHE_KEY)
    if cached is None:
        from argilla_server.models import Webhook
        from sqlalchemy import select

        rows = (await db.execute(select(Webhook.events).where(Webhook.enabled.is_(True)))).scalars().all()
        cached = frozenset(str(event) for events in rows for event in (events or []))
        db.info[_CACHE_KEY] = cached
    return cached


def _gated(original: Callable[..., Awaitable[list]]) -> Callable[..., Awaitable[list]]:
    @functools.wraps(original)
    async def notify(db: Any, event: Any, *subject: Any, **named: Any) -> list:
        if str(getattr(event, "value", event)) not in await subscribed_events(db):
            return []
        return await original(db, event, *subject, **named)

    notify.__wrapped_by_gate__ = True  # type: ignore[attr-defined]
    return notify


def install() -> int:
    """Replace the notify functions wherever ``argilla_server`` bound them; how many names were replaced.

    Raises ``RuntimeError`` when a notify function is missing or no caller binds it any more (a different
    Argilla version): the service then refuses to start rather than run without the gate unnoticed.
    """
    for name in _CALLERS:
        importlib.import_module(name)
    replaced = 0
    for module_name, function_name in _NOTIFIERS:
        module = importlib.import_module(module_name)
        original = getattr(module, function_name, None)
        if original is None:
            raise RuntimeError(f"{module_name}.{function_name} does not exist: webhook_gate does not fit this Argilla")
        if getattr(original, "__wrapped_by_gate__", False):
            continue
        gated = _gated(original)
        bound = 0
        for loaded_name, loaded in list(sys.modules.items()):
            if loaded is None or not loaded_name.startswith("argilla_server"):
                continue
            for attribute, value in list(vars(loaded).items()):
                if value is original:
                    setattr(loaded, attribute, gated)
                    bound += 1
        if bound < 2:  # the defining module and at least one caller
            raise RuntimeError(f"no Argilla module calls {module_name}.{function_name}: "
                               "webhook_gate does not fit this Argilla")
        replaced += bound
    return replaced
