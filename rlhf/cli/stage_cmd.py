"""Stage subcommands built from the stage table (:data:`rlhf.stages.STAGES`).

Every stage runs as ``rlhf <command words> [CONFIG] [key=value ...]``: the table gives the words, the help
line, the config model (whose keys, defaults and docs become the ``--help`` epilog, imported only when that
help is printed) and the run function (imported only when the stage runs). ``rlhf train`` groups the stages
whose command starts with ``train``; a stage whose one config serves several actions gets an ``ACTION``
word first (``rlhf eval-human push|pull [CONFIG] [key=value ...]``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rlhf.cli.common import CommandParser, add_config_arguments, load_stage_config
from rlhf.core.config import StrictModel
from rlhf.stages import STAGES, Stage

__all__ = ["add_actions_parser", "add_stage_parser", "add_train_parser", "command_subparsers"]

# An action of a stage: its help line and the function that runs it on the loaded config.
Action = tuple[str, Callable[[StrictModel], object]]


def add_stage_parser(subparsers: argparse._SubParsersAction, entry: Stage) -> argparse.ArgumentParser:
    """``rlhf <words> [CONFIG] [key=value ...]`` for one table row; returns the parser for extra flags."""
    parser = subparsers.add_parser(entry.command[-1], help=entry.help, description=entry.help)
    add_config_arguments(parser, entry.name)
    parser.set_defaults(func=lambda args: _run(args, entry))
    return parser


def _run(args: argparse.Namespace, entry: Stage) -> int:
    cfg = load_stage_config(args, entry.name, " ".join(entry.command))
    entry.run_function()(cfg)
    return 0


def add_actions_parser(subparsers: argparse._SubParsersAction, entry: Stage,
                       actions: dict[str, Action]) -> argparse.ArgumentParser:
    """``rlhf <words> ACTION [CONFIG] [key=value ...]``: one subcommand per action, each loading the stage's
    config and calling its function (imported by the function itself, when it runs)."""
    parser = subparsers.add_parser(entry.command[-1], help=entry.help, description=entry.help)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, (text, run) in actions.items():
        child = sub.add_parser(action, help=text, description=text)
        add_config_arguments(child, entry.name)
        command = " ".join((*entry.command, action))
        child.set_defaults(func=lambda args, run=run, command=command: _run_action(args, entry, run, command))
    return parser


def _run_action(args: argparse.Namespace, entry: Stage, run: Callable[[StrictModel], object], command: str) -> int:
    run(load_stage_config(args, entry.name, command))
    return 0


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    """``rlhf train sft|rm|dpo|ppo``."""
    rows = [entry for entry in STAGES if entry.command[0] == "train"]
    parser = subparsers.add_parser("train", help="train a model: " + ", ".join(e.command[-1] for e in rows),
                                   description="Train a model; each stage takes [CONFIG] [key=value ...].")
    sub = parser.add_subparsers(dest="train_command", metavar="STAGE", required=True)
    for entry in rows:
        add_stage_parser(sub, entry)


def command_subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """The top-level subparsers action; its parsers (and theirs) are :class:`CommandParser` with lazy epilogs."""
    return parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
