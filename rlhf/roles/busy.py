"""Seconds each role spends computing, for the per-phase breakdown of a PPO step.

The controller times each phase of a step from outside (``timing/<phase>``: wall time, Ray calls included).
Every role also times its own work (:class:`BusyTime`) under a name per kind of work, and hands the sums over
when asked (``busy_seconds``, once per step). :func:`merge_busy` folds the actors' reports into the step's
``timing/compute/<name>`` metrics: replicas of one role work side by side, so their maximum is what the
phase waited for. A phase's wall time minus the compute it waited for is the Ray and controller overhead.
The names are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["BusyRole", "BusyTime", "busy", "merge_busy"]

F = TypeVar("F", bound=Callable)


class BusyTime:
    """Seconds spent per kind of work since the last :meth:`drain`."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start

    def drain(self) -> dict[str, float]:
        """The sums so far, then start again from zero."""
        out, self._seconds = self._seconds, {}
        return out


class BusyRole:
    """A role whose methods count their time with :func:`busy`: it sets ``self.busy = BusyTime()`` when built
    and hands the sums over with :meth:`busy_seconds`."""

    busy: BusyTime

    def busy_seconds(self) -> dict[str, float]:
        """Seconds spent per kind of work since the last call."""
        return self.busy.drain()

    def freeze_heap(self) -> int:
        """Once the role is set up: keep the garbage collector off what it holds (:mod:`rlhf.utils.heap`), so
        no full collection pauses its work; returns how many objects are frozen."""
        from rlhf.utils.heap import freeze_heap

        return freeze_heap()


def busy(name: str) -> Callable[[F], F]:
    """Count the decorated method's time under ``name`` in its object's ``busy`` (a :class:`BusyTime`)."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def timed(self, *args, **kwargs):
            with self.busy.measure(name):
                return method(self, *args, **kwargs)

        return timed  # type: ignore[return-value]

    return decorate


def merge_busy(reports: list[dict[str, float]]) -> dict[str, float]:
    """One ``timing/compute/<name>`` figure per name: the largest report (replicas run side by side)."""
    merged: dict[str, float] = {}
    for report in reports:
        for name, seconds in report.items():
            merged[name] = max(merged.get(name, 0.0), seconds)
    return {f"timing/compute/{name}": seconds for name, seconds in sorted(merged.items())}
