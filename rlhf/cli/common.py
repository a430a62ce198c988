"""The one argument convention of every ``rlhf`` command: ``rlhf <command> [CONFIG] [key=value ...]``.

``CONFIG`` is a YAML file (optional: the embedded defaults otherwise) and each ``key=value`` a dotted
override, validated together before anything runs. Flags are kept for values that are not config keys
(``--json``, ``--yes``, ``--wait-for-humans``). :class:`CommandParser` builds a command's ``--help`` epilog
(its stage's config keys) only when help is printed, so building the parser imports no config model, no
recipe and no torch.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path

from rlhf.core.config import ConfigError, StrictModel, field_help
from rlhf.stages import STAGES, config_class, load_config

__all__ = ["CommandParser", "add_config_arguments", "config_epilog", "config_source", "load_stage_config"]

# Flags of the old ``-c FILE -s key=value`` form, answered with the positional form instead.
_OLD_FLAGS = re.compile(r"(?:^|\s)(-c|-s|--config|--set)(?:\s|=|$)")


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose epilog (the config keys of ``stage_name``) is built only when help is printed.

    A command that takes ``[CONFIG] [key=value ...]`` (``intermixed``, set by :func:`add_config_arguments`)
    parses intermixed: flags may stand between the positionals (``rlhf label users add bob --role admin
    service.port=6901``).
    """

    stage_name: str = ""
    intermixed: bool = False
    _parsing: bool = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if not self.intermixed or self._parsing:
            return super().parse_known_args(args, namespace)
        self._parsing = True  # parse_known_intermixed_args calls back into this method
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False

    def format_help(self) -> str:
        if self.stage_name and self.epilog is None:
            self.epilog = config_epilog(self.stage_name)
        return super().format_help()

    def error(self, message: str):  # type: ignore[override]
        if "unrecognized arguments" in message and _OLD_FLAGS.search(message):
            message += ("; -c/--config and -s/--set are gone: give the config file and the overrides as "
                        "positionals, rlhf <command> [CONFIG] [key=value ...]")
        super().error(message)


def add_config_arguments(parser: argparse.ArgumentParser, stage: str | None, *, accepts: str | None = None) -> None:
    """Add ``[CONFIG] [key=value ...]`` to a command that reads a config of ``stage`` (whose keys its --help
    lists; None: a file of any stage); ``accepts`` names the stages a file may configure when that is not just
    ``stage``."""
    kind = f"with 'stage: {accepts or stage}' " if stage else "of the stage "
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help=f"YAML config {kind}(omit to use the embedded defaults)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="dotted overrides applied after the file" +
                             (" (the config keys are listed below)" if stage else ", e.g. train.lr=1e-5"))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    if isinstance(parser, CommandParser):
        parser.stage_name = stage or ""
        parser.intermixed = True


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


def config_source(args: argparse.Namespace, command: str) -> tuple[str | None, list[str]]:
    """(config file, overrides) named on the command line. A first positional holding ``=`` is an override
    (``rlhf train sft a=b``); a config file after the overrides is an error that shows the order."""
    path = args.config
    overrides = list(args.overrides)
    if path is not None and "=" in path and not path.endswith((".yaml", ".yml")):
        overrides.insert(0, path)
        path = None
    if path is not None and not path.endswith((".yaml", ".yml")) and not Path(path).is_file():
        raise ConfigError(f"'{path}' is neither a YAML config file nor a key=value override; write "
                          f"rlhf {command} [CONFIG] key=value ...{_command_hint(command, path)}")
    misplaced = [item for item in overrides if "=" not in item]
    if misplaced:
        item = misplaced[0]
        if item.endswith((".yaml", ".yml")):
            raise ConfigError(f"'{item}' comes after an override; the config file comes first: "
                              f"rlhf {command} {item} key=value ...")
        raise ConfigError(f"'{item}' is not an override of the form key.path=value; write "
                          f"rlhf {command} [CONFIG] key=value ...")
    return path, overrides


def _command_hint(command: str, word: str) -> str:
    """`` (did you mean 'rlhf eval-human'?)`` when ``<command> <word>`` is close to another stage's command."""
    commands = [" ".join(entry.command) for entry in STAGES]
    near = difflib.get_close_matches(f"{command} {word}", commands, n=1, cutoff=0.8)
    return f" (did you mean 'rlhf {near[0]}'?)" if near else ""


def load_stage_config(args: argparse.Namespace, stage: str | None, command: str) -> StrictModel:
    """Load and validate the config named on the command line for ``stage`` (any stage when None)."""
    path, overrides = config_source(args, command)
    return load_config(path, overrides, expect_stage=stage)
