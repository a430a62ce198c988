"""The ``rlhf`` command line: one entry point, a subcommand per stage.

Each command module exposes ``add_parser(subparsers)`` which registers its subcommand and sets
``func`` (called with the parsed namespace, returns an exit code). Stage commands share the
``[CONFIG] [key=value ...]`` convention: a YAML file (optional: the embedded defaults otherwise) and dotted
overrides, validated together before anything runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rlhf.errors import USER_ERRORS

# Command modules, in the order they appear in `rlhf --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "rlhf.commands.config_cmd",
    "rlhf.commands.lineage_cmd",
    "rlhf.commands.model_cmd",
    "rlhf.stages.prepare",
    "rlhf.commands.train_cmd",
    "rlhf.stages.generate",
    "rlhf.labeling.cli",
    "rlhf.stages.evaluate",
    "rlhf.stages.report",
    "rlhf.commands.submit_cmd",
    "rlhf.stages.pipeline",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the CLI tests)."""
    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Human-in-the-loop RLHF: prepare, SFT, generate, label in Argilla, train RM/DPO/PPO, eval, report.",
    )
    parser.add_argument("--version", action="version", version=f"rlhf-pipeline {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def _version() -> str:
    from rlhf import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlhf`` console script."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        print(f"rlhf: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlhf: interrupted; completed stages are kept and an interrupted one resumes on re-run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
