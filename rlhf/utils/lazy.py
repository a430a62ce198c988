"""Package attributes loaded on first use (PEP 562), so importing a package does not import what its
submodules import (torch, Ray, the Argilla SDK) until a name that needs it is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(namespace: dict[str, Any], modules: Mapping[str, tuple[str, ...]]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose ``globals()`` is ``namespace``.

    ``modules`` maps a submodule name to the attributes it provides; an attribute is imported from
    ``<package>.<submodule>`` when first asked for and then kept in ``namespace``.
    """
    package = namespace["__name__"]
    home = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *home})

    return __getattr__, __dir__
