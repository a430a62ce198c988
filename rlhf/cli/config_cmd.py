"""``rlhf config show|validate|keys``: inspect and check configuration files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from rlhf.core.config import ConfigError
from rlhf.stages import load_config, stage_names

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show, validate or list the keys of stage configs")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    show = sub.add_parser("show", help="print a config resolved with defaults and overrides")
    show.add_argument("config", help="YAML config file")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    show.set_defaults(func=_show)

    validate = sub.add_parser("validate", help="validate config files (folders are searched recursively)")
    validate.add_argument("paths", nargs="+", help="YAML files or folders")
    validate.set_defaults(func=_validate)

    keys = sub.add_parser("keys", help="list a stage's config keys with defaults and docs")
    keys.add_argument("stage", help="stage name (see 'rlhf config keys --list')", nargs="?")
    keys.set_defaults(func=_keys)


def _show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return 0


def _collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path} does not exist; pass config files or folders")
    return files


def _validate(args: argparse.Namespace) -> int:
    failures = 0
    for path in _collect(args.paths):
        try:
            cfg = load_config(path)
        except ConfigError as err:
            failures += 1
            print(f"FAIL {err}")
        else:
            print(f"ok   {path} (stage {cfg.stage})")  # type: ignore[attr-defined]
    return 1 if failures else 0


def _keys(args: argparse.Namespace) -> int:
    from rlhf.cli.common import config_epilog

    if not args.stage:
        print("stages: " + ", ".join(stage_names()))
        return 0
    print(config_epilog(args.stage))
    return 0
