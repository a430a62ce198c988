"""Freezing the heap: what a process holds once set up leaves the garbage collector's generations, what it
allocates afterwards does not."""

from __future__ import annotations

import gc

from rlhf.utils.heap import freeze_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_freeze_heap_keeps_the_collector_off_what_exists_and_on_what_comes_after():
    held = [_Node() for _ in range(1000)]
    try:
        frozen = freeze_heap()
        assert frozen >= len(held) and gc.get_freeze_count() == frozen
        assert not any(gc.is_tracked(o) and o in gc.get_objects(generation=2) for o in held[:3])
        later = _Node()
        assert any(o is later for o in gc.get_objects(generation=0))
        del later
        assert gc.collect() >= 1  # new cycles are still collected
    finally:
        gc.unfreeze()
