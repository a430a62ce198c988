"""Keep the cyclic garbage collector off the objects a process holds for its whole life.

A process that has imported torch, transformers and Ray, and loaded a model, holds a few hundred thousand
long-lived objects, and every full collection walks them all. In the PPO controller one such collection
stalled a step's generation phase by 0.22 s (0.47 s against 0.25 s for its neighbours). :func:`freeze_heap`
moves every object alive at that point to the permanent generation (``gc.freeze``), so the collections a
training loop triggers walk only what the loop allocated. Objects are still freed as their reference counts
fall to zero; only cycles among the frozen ones would outlive the process's need for them.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_heap"]


def freeze_heap() -> int:
    """Collect what is garbage now, then freeze the rest; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
