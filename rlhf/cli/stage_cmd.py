"""Stage subcommands built from the stage table (:data:`rlhf.stages.STAGES`).

Every stage runs as ``rlhf <command words> [CONFIG] [key=value ...]``: the table gives the words, the help
line, the config model (whose keys, defaults and docs become the ``--help`` epilog, imported only when that
help is printed) and the run function (imported only when the stage runs). ``rlhf train`` groups the stages
whose command starts with ``train``.
"""

from __future__ import annotations

import argparse

from rlhf.cli.common import add_config_arguments, config_epilog, load_stage_config
from rlhf.stages import STAGES, Stage

__all__ = ["add_stage_parser", "add_train_parser"]


class _StageParser(argparse.ArgumentParser):
    """An argument parser whose epilog (the stage's config keys) is built only when help is printed."""

    stage_name: str = ""

    def format_help(self) -> str:
        if self.stage_name and self.epilog is None:
            self.epilog = config_epilog(self.stage_name)
        return super().format_help()


def add_stage_parser(subparsers: argparse._SubParsersAction, entry: Stage, **extra) -> argparse.ArgumentParser:
    """``rlhf <words> [CONFIG] [key=value ...]`` for one table row; returns the parser for extra flags."""
    parser = subparsers.add_parser(entry.command[-1], help=entry.help, description=entry.help,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **extra)
    if isinstance(parser, _StageParser):
        parser.stage_name = entry.name
    add_config_arguments(parser)
    parser.set_defaults(func=lambda args: _run(args, entry))
    return parser


def _run(args: argparse.Namespace, entry: Stage) -> int:
    cfg = load_stage_config(args, entry.name)
    entry.run_function()(cfg)
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """``rlhf train sft|rm|dpo|ppo``."""
    rows = [entry for entry in STAGES if entry.command[0] == "train"]
    parser = subparsers.add_parser("train", help="train a model: " + ", ".join(e.command[-1] for e in rows))
    sub = parser.add_subparsers(dest="train_command", metavar="STAGE", required=True, parser_class=_StageParser)
    for entry in rows:
        add_stage_parser(sub, entry)


def stage_subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The top-level subparsers action, making stage parsers with lazy epilogs."""
    return parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_StageParser)
