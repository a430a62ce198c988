"""Argument conventions shared by stage commands: ``[CONFIG] [key=value ...]``."""

from __future__ import annotations

import argparse

from rlhf.core.config import StrictModel, field_help
from rlhf.stages import config_class, load_config

__all__ = ["add_config_arguments", "config_epilog", "load_stage_config"]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the positional config file and dotted overrides to a stage parser."""
    parser.add_argument("config", nargs="?", default=None,
                        help="YAML config file (omit to use the embedded defaults)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="dotted overrides applied after the file, e.g. train.lr=1e-5")


def config_epilog(stage: str) -> str:
    """The stage's config keys with defaults and docs, for ``--help``."""
    rows = field_help(config_class(stage))
    width = max(len(key) for key, _, _ in rows)
    lines = [f"config keys (stage '{stage}'):"]
    for key, default, doc in rows:
        if key == "stage":
            continue
        lines.append(f"  {key:<{width}}  {doc}" + (f" [default: {default}]" if default else ""))
    return "\n".join(lines)


def load_stage_config(args: argparse.Namespace, stage: str) -> StrictModel:
    """Load and validate the stage config named on the command line (a config file given as an override
    is caught: ``rlhf train sft a=b`` treats ``a=b`` as an override, not a file)."""
    path = args.config
    overrides = list(args.overrides)
    if path is not None and "=" in path and not path.endswith((".yaml", ".yml")):
        overrides.insert(0, path)
        path = None
    return load_config(path, overrides, expect_stage=stage)
