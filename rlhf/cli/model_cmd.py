"""``rlhf model build-tiny``: build (or find cached) the tiny model and print its folder."""

from __future__ import annotations

import argparse

from rlhf.core.config import apply_overrides, validate_config
from rlhf.models.config import TinyModelConfig

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="model utilities (build the tiny model)")
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    build = sub.add_parser("build-tiny", help="build the tiny Llama-style model and tokenizer; print the folder")
    build.add_argument("overrides", nargs="*", metavar="key=value", help="tiny-model keys, e.g. hidden_size=128")
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from rlhf.models.tiny import build_tiny_model

    cfg = validate_config(TinyModelConfig, apply_overrides({}, args.overrides), source="tiny model")
    path = build_tiny_model(cfg)
    print(path)
    return 0
