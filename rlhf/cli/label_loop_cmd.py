"""``rlhf label push|simulate|status|pull``: the preference loop's commands (registrars for ``rlhf label``).

::

    rlhf label push     [CONFIG] [KEY=VALUE ...]            candidates -> one Argilla dataset per round
    rlhf label simulate [CONFIG] [KEY=VALUE ...]            bot annotators work the round's queue
    rlhf label status   [CONFIG] [KEY=VALUE ...] [--json]   progress overall and per annotator
    rlhf label pull     [CONFIG] [KEY=VALUE ...]            snapshot: responses, pairs, quality report

``CONFIG`` names a YAML file of the command's stage (``label_push``, ``label_simulate``, ``label_pull``;
``status`` takes a ``label_pull`` or ``label_simulate`` file, using its ``push``, ``argilla`` and ``service``
keys) and ``KEY=VALUE`` gives dotted overrides, e.g. ``push=runs/label_push/demo-1a2b3c4d5e6f``, as in every
other stage. ``-c FILE`` and ``-s KEY=VALUE`` (the form of the other ``rlhf label`` commands) mean the same.
See docs/preference-loop.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from rlhf.stages import load_config

__all__ = ["LOOP_REGISTRARS"]

STATUS_STAGES = ("label_pull", "label_simulate")


def _options(parser: argparse.ArgumentParser, stage: str, accepts: str | None = None) -> None:
    """``[CONFIG] [KEY=VALUE ...]`` as in the other stages, ``-c/--config`` and ``-s/--set`` as in the other
    ``rlhf label`` commands, with the stage's keys in --help."""
    from rlhf.cli.common import config_epilog

    parser.add_argument("positional", nargs="*", default=[], metavar="[CONFIG] [KEY=VALUE]",
                        help="a YAML config file, then dotted overrides (the same as -c and -s)")
    parser.add_argument("-c", "--config", default=None,
                        help=f"YAML config with 'stage: {accepts or stage}' (default: built-in)")
    parser.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted override, repeatable, e.g. -s push=runs/label_push/demo-1a2b3c4d5e6f")
    parser.epilog = config_epilog(stage)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _merge_positional(args: argparse.Namespace) -> None:
    """Fold ``CONFIG KEY=VALUE ...`` into ``args.config`` and ``args.overrides``."""
    from rlhf.core.errors import UserError

    rest = list(args.positional)
    args.positional = []
    if rest and ("=" not in rest[0] or rest[0].endswith((".yaml", ".yml"))):
        path = rest.pop(0)
        if args.config is not None and args.config != path:
            raise UserError(f"two config files, -c {args.config} and {path}; give one")
        args.config = path
    bad = [item for item in rest if "=" not in item]
    if bad:
        raise UserError(f"'{bad[0]}' is not an override of the form key.path=value, and the config file "
                        "comes first (e.g. rlhf label pull configs/label/pull-demo.yaml push=runs/label_push/<id>)")
    args.overrides = [*args.overrides, *rest]


def _config(args: argparse.Namespace, stage: str | None) -> Any:
    _merge_positional(args)
    return load_config(args.config, list(args.overrides), expect_stage=stage)


def _push(args: argparse.Namespace) -> int:
    from rlhf.labeling.loop.push import run_push

    run_push(_config(args, "label_push"))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from rlhf.labeling.loop.simulate import run_simulate

    run_simulate(_config(args, "label_simulate"))
    return 0


def _status(args: argparse.Namespace) -> int:
    from rlhf.core.errors import UserError
    from rlhf.labeling.loop.common import connect, load_pseudonym_key, read_push
    from rlhf.labeling.loop.status import round_status

    _merge_positional(args)
    cfg = _config(args, None if args.config else "label_pull")
    if cfg.stage not in STATUS_STAGES:
        raise UserError(f"{args.config} configures stage '{cfg.stage}'; "
                        "status takes a label_pull or label_simulate file")
    push = read_push(cfg.push)
    with connect(cfg.argilla, cfg.service) as http:
        status = round_status(http, push, load_pseudonym_key(cfg.service))
    print(json.dumps(status.to_dict(), indent=2) if args.json else status.describe())
    return 0


def _pull(args: argparse.Namespace) -> int:
    from rlhf.labeling.loop.pull import run_pull

    run_pull(_config(args, "label_pull"))
    return 0


def _add_push(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("push", help="push a generate stage's candidates as one ranking dataset (a round)")
    _options(parser, "label_push")
    parser.set_defaults(func=_push)


def _add_simulate(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("simulate", help="bot annotators (honest, careless, position-biased) rank a round")
    _options(parser, "label_simulate")
    parser.set_defaults(func=_simulate)


def _add_status(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("status", help="progress of a round, overall and per annotator (with pseudonyms)")
    _options(parser, "label_pull", accepts="label_pull' or 'stage: label_simulate")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=_status)


def _add_pull(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("pull", help="snapshot a round: raw responses, training pairs, quality report")
    _options(parser, "label_pull")
    parser.set_defaults(func=_pull)


LOOP_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_push, _add_simulate, _add_status, _add_pull]
