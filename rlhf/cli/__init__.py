"""The ``rlhf`` command line: one entry point, a subcommand per stage.

Each command module exposes ``add_parser(subparsers)`` which registers its subcommand and sets
``func`` (called with the parsed namespace, returns an exit code). Every command that reads a config shares
the ``[CONFIG] [key=value ...]`` convention (:mod:`rlhf.cli.common`): a YAML file (optional: the embedded
defaults otherwise) and dotted overrides, validated together before anything runs; flags only carry values
that are not config keys.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rlhf.core.errors import USER_ERRORS

# Utility commands that are not stages, each a module with ``add_parser(subparsers)``.
UTILITY_MODULES: tuple[str, ...] = ("rlhf.cli.config_cmd", "rlhf.cli.lineage_cmd", "rlhf.cli.model_cmd")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the CLI tests).

    Stage commands come from the stage table; building the parser imports no config model, no recipe and no
    torch (``rlhf --help`` and every ``rlhf <command> --help`` answer at once).
    """
    from rlhf.cli import feedback_cmd, label_cmd, submit_cmd
    from rlhf.cli.common import CommandParser
    from rlhf.cli.stage_cmd import add_actions_parser, add_stage_parser, add_train_parser, command_subparsers
    from rlhf.stages import stage

    parser = CommandParser(
        prog="rlhf",
        description="Human-in-the-loop RLHF: prepare, SFT, generate, label in Argilla, train RM/DPO/PPO, eval, "
                    "report. Every command takes [CONFIG] [key=value ...]: a YAML file and dotted overrides.",
    )
    parser.add_argument("--version", action="version", version=f"rlhf-pipeline {_version()}")
    subparsers = command_subparsers(parser)
    for name in UTILITY_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    add_stage_parser(subparsers, stage("prepare"))
    add_train_parser(subparsers)
    add_stage_parser(subparsers, stage("generate"))
    label_cmd.add_parser(subparsers)
    add_stage_parser(subparsers, stage("eval"))
    add_actions_parser(subparsers, stage("eval_human"), {
        "push": ("put a blind comparison of two checkpoints into Argilla", _human_push),
        "pull": ("merge the submitted votes into a win rate with an interval", _human_pull),
    })
    add_stage_parser(subparsers, stage("report"))
    submit_cmd.add_parser(subparsers)
    add_stage_parser(subparsers, stage("serve"))
    feedback_cmd.add_parser(subparsers)
    add_stage_parser(subparsers, stage("monitor"))
    pipeline = add_stage_parser(subparsers, stage("pipeline"))
    pipeline.add_argument("--wait-for-humans", action="store_true",
                          help="print the UI address and wait for people to rank instead of simulated annotators")
    return parser


def _human_push(cfg) -> None:
    from rlhf.stages.eval_human import run_push

    run_push(cfg)


def _human_pull(cfg) -> None:
    from rlhf.stages.eval_human import run_pull

    run_pull(cfg)


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
    if getattr(args, "wait_for_humans", False):
        args.overrides = [*args.overrides, "wait_for_humans=true"]
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
