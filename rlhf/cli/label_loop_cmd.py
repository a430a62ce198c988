"""``rlhf label push|simulate|status|pull``: the preference loop's commands (registrars for ``rlhf label``).

::

    rlhf label push     [CONFIG] [key=value ...]            candidates -> one Argilla dataset per round
    rlhf label simulate [CONFIG] [key=value ...]            bot annotators work the round's queue
    rlhf label status   [CONFIG] [key=value ...] [--json]   progress overall and per annotator
    rlhf label pull     [CONFIG] [key=value ...]            snapshot: responses, pairs, quality report

``push``, ``simulate`` and ``pull`` are the stages ``label_push``, ``label_simulate`` and ``label_pull`` of the
stage table, built like every other stage. ``status`` takes a ``label_pull`` or ``label_simulate`` file (using
its ``push``, ``argilla`` and ``service`` keys), e.g. ``rlhf label status configs/label/pull-demo.yaml
push=runs/label_push/demo-1a2b3c4d5e6f``. See docs/preference-loop.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rlhf.cli.common import add_config_arguments, load_stage_config
from rlhf.cli.stage_cmd import add_stage_parser
from rlhf.core.errors import UserError
from rlhf.stages import stage

__all__ = ["LOOP_REGISTRARS", "STATUS_STAGES"]

STATUS_STAGES = ("label_pull", "label_simulate")


def _status(args: argparse.Namespace) -> int:
    from rlhf.labeling.loop.common import connect, load_pseudonym_key, read_push
    from rlhf.labeling.loop.status import round_status

    cfg: Any = load_stage_config(args, None if args.config else "label_pull", "label status")
    if cfg.stage not in STATUS_STAGES:
        raise UserError(f"{args.config} configures stage '{cfg.stage}'; "
                        "status takes a label_pull or label_simulate file")
    push = read_push(cfg.push)
    with connect(cfg.argilla, cfg.service) as http:
        status = round_status(http, push, load_pseudonym_key(cfg.service))
    print(json.dumps(status.to_dict(), indent=2) if args.json else status.describe())
    return 0


def _add_push(groups: argparse._SubParsersAction) -> None:
    add_stage_parser(groups, stage("label_push"))


def _add_simulate(groups: argparse._SubParsersAction) -> None:
    add_stage_parser(groups, stage("label_simulate"))


def _add_status(groups: argparse._SubParsersAction) -> None:
    text = "progress of a round, overall and per annotator (with pseudonyms)"
    parser = groups.add_parser("status", help=text, description=text)
    add_config_arguments(parser, "label_pull", accepts="label_pull' or 'stage: label_simulate")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_status)


def _add_pull(groups: argparse._SubParsersAction) -> None:
    add_stage_parser(groups, stage("label_pull"))


LOOP_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_push, _add_simulate, _add_status, _add_pull]
