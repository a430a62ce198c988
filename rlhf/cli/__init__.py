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

from rlhf.core.errors import USER_ERRORS

# Utility commands that are not stages, each a module with ``add_parser(subparsers)``.
UTILITY_MODULES: tuple[str, ...] = ("rlhf.cli.config_cmd", "rlhf.cli.lineage_cmd", "rlhf.cli.model_cmd")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the CLI tests).

    Stage commands come from the stage table; building the parser imports no recipe and no torch.
    """
    from rlhf.cli import label_cmd, submit_cmd
    from rlhf.cli.stage_cmd import add_stage_parser, add_train_parser, stage_subparsers
    from rlhf.stages import stage

    parser = argparse.ArgumentParser(
        prog="rlhf",
        description="Human-in-the-loop RLHF: prepare, SFT, generate, label in Argilla, train RM/DPO/PPO, eval, report.",
    )
    parser.add_argument("--version", action="version", version=f"rlhf-pipeline {_version()}")
    subparsers = stage_subparsers(parser)
    for name in UTILITY_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    add_stage_parser(subparsers, stage("prepare"))
    add_train_parser(subparsers)
    add_stage_parser(subparsers, stage("generate"))
    label_cmd.add_parser(subparsers)
    add_eval_parser(subparsers)
    add_stage_parser(subparsers, stage("report"))
    submit_cmd.add_parser(subparsers)
    pipeline = add_stage_parser(subparsers, stage("pipeline"))
    pipeline.add_argument("--wait-for-humans", action="store_true",
                          help="print the UI address and wait for people to rank instead of simulated annotators")
    return parser


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    """``rlhf eval [CONFIG] [key=value ...]`` and ``rlhf eval human push|pull [CONFIG] [key=value ...]``."""
    from rlhf.cli.stage_cmd import add_stage_parser
    from rlhf.stages import stage

    parser = add_stage_parser(subparsers, stage("eval"))
    run_eval = parser.get_default("func")

    def dispatch(args: argparse.Namespace) -> int:
        if args.config == "human":
            from rlhf.stages.eval_human import main as human_main

            return human_main(list(args.overrides))
        return run_eval(args)

    parser.set_defaults(func=dispatch)


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
