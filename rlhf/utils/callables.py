"""Resolve ``module:function`` specs from config into callables."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rlhf.core.errors import UserError

__all__ = ["load_callable"]


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` (attr may be dotted) and return it; one-line errors otherwise."""
    if ":" not in spec:
        raise UserError(f"'{spec}' is not a callable spec; write it as package.module:function")
    module_name, attr = spec.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"cannot import module '{module_name}' for '{spec}' ({err}); check the spelling and PYTHONPATH") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module '{module_name}' has no attribute '{attr}' (from '{spec}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"'{spec}' is not callable")
    return obj
