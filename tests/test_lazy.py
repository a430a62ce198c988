"""Packages whose names load on first use: every exported name resolves, an unknown one is an AttributeError."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["rlhf.rl", "rlhf.rollout", "rlhf.models", "rlhf.labeling"])
def test_every_exported_name_loads_and_an_unknown_one_is_an_attribute_error(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        _ = module.no_such_name
