"""``rlhf feedback export [CONFIG] [key=value ...]`` and ``rlhf feedback forget USER [CONFIG] [key=value ...]``."""

from __future__ import annotations

import argparse

from rlhf.cli.common import add_config_arguments, load_stage_config

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from rlhf.stages import stage

    entry = stage("feedback")
    parser = subparsers.add_parser("feedback", help=entry.help, description=entry.help)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write a window of negative feedback as a prompts JSONL with provenance",
                            description="Write the prompts of a window's thumbs-down, escalated, rephrased and "
                                        "abandoned replies (deduplicated, with provenance) as a prompts JSONL.")
    add_config_arguments(export, "feedback")
    export.set_defaults(func=_export)
    forget = sub.add_parser("forget", help="erase a user's replies and feedback; mark the exports made from them",
                            description="Erase a user's replies and feedback from the store (GDPR) and mark the "
                                        "exports that hold their data.")
    forget.add_argument("user", metavar="USER", help="the user id the client sent (the OpenAI 'user' field)")
    add_config_arguments(forget, "feedback")
    forget.set_defaults(func=_forget)


def _export(args: argparse.Namespace) -> int:
    from rlhf.stages.feedback import run_export

    run_export(load_stage_config(args, "feedback", "feedback export"))
    return 0


def _forget(args: argparse.Namespace) -> int:
    from rlhf.stages.feedback import run_forget

    args.overrides = [*args.overrides, f"user={args.user}"]
    run_forget(load_stage_config(args, "feedback", "feedback forget"))
    return 0
