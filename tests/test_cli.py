"""The CLI: every subcommand has --help; config commands report one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, prefix: list[str]):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, prefix + [name])


COMMANDS = list(_walk(build_parser(), []))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_expected_commands_exist():
    names = {" ".join(c) for c in COMMANDS}
    for cmd in ("config show", "config validate", "lineage", "train sft", "model build-tiny"):
        assert cmd in names


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "rlhf")
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*cmd, "--help"])
    assert exit_info.value.code == 0
    assert "usage: rlhf" in capsys.readouterr().out


def test_validate_reports_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: sft\ntrain:\n  bach_size: 4\n")
    assert main(["config", "validate", str(bad)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "'bach_size'" in out[0] and "did you mean 'batch_size'" in out[0]


def test_stage_error_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "sft", "train.lrr=1"],
                          check=False, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("rlhf: error:") and "did you mean 'lr'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_config_show_resolves_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage: sft\n")
    assert main(["config", "show", str(cfg), "train.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


# --- one convention: rlhf <command> [CONFIG] [key=value ...] ------------------------------------------------

def test_expected_commands_exist_in_help(capsys):
    names = {" ".join(c) for c in COMMANDS}
    for cmd in ("eval", "eval-human push", "eval-human pull", "label push", "label status", "label serve start",
                "label users add", "label workspaces remove"):
        assert cmd in names
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert "  eval " in listing and "  eval-human" in listing


def _label_config(tmp_path: Path) -> Path:
    path = tmp_path / "label.yaml"
    path.write_text("stage: label\nservice:\n  port: 6901\n")
    return path


@pytest.mark.parametrize("argv", [
    ["serve", "stop"], ["users", "list"], ["users", "add", "bob", "--role", "admin"], ["users", "remove", "bob", "--yes"],
    ["workspaces", "add", "team"], ["workspaces", "list"], ["workspaces", "remove", "team"],
])
def test_label_service_commands_take_config_and_overrides_positionally(argv, tmp_path, capsys):
    """The config file and the overrides reach the command: the service home given as an override is the one
    the command looks for (and finds not running, in one line)."""
    home = tmp_path / "home"
    code = main(["label", *argv, str(_label_config(tmp_path)), f"service.home={home}"])
    err = capsys.readouterr().err
    if argv == ["serve", "stop"]:
        assert code == 0
    else:
        assert code == 2 and err.startswith(f"rlhf: error: the labeling service in {home} is not running")
        assert len(err.strip().splitlines()) == 1


def test_label_serve_status_reads_the_file_and_the_overrides(tmp_path, capsys):
    config = tmp_path / "label.yaml"
    config.write_text(f"stage: label\nservice:\n  home: {tmp_path / 'from-file'}\n")
    assert main(["label", "serve", "status", "--json", str(config)]) == 3
    assert json.loads(capsys.readouterr().out)["home"] == str(tmp_path / "from-file")
    assert main(["label", "serve", "status", str(config), f"service.home={tmp_path / 'override'}", "--json"]) == 3
    status = json.loads(capsys.readouterr().out)
    assert status["status"] == "not-started" and status["home"] == str(tmp_path / "override")


@pytest.mark.parametrize("command, message", [
    ("push", "does not exist; run 'rlhf generate'"),
    ("simulate", "not a completed push folder"),
    ("status", "not a completed push folder"),
    ("pull", "not a completed push folder"),
])
def test_label_loop_commands_take_config_and_overrides_positionally(command, message, tmp_path, capsys):
    config = {"push": "push-demo", "simulate": "simulate-demo"}.get(command, "pull-demo")
    argv = ["label", command, str(CONFIGS / "label" / f"{config}.yaml"), f"run.root={tmp_path}",
            f"candidates={tmp_path / 'nowhere'}" if command == "push" else f"push={tmp_path / 'nowhere'}",
            f"service.home={tmp_path / 'home'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf: error:") and message in err and str(tmp_path / "nowhere") in err


def test_label_status_takes_a_pull_or_simulate_file(tmp_path, capsys):
    assert main(["label", "status", str(CONFIGS / "label" / "push-demo.yaml")]) == 2
    assert "configures stage 'label_push'; status takes a label_pull or label_simulate file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["label", "pull", "-c", "configs/label/pull-demo.yaml", "-s", "push=runs/label_push/demo-1"],
    ["label", "users", "list", "-s", "service.port=6901"],
    ["label", "serve", "start", "--config", "configs/label/x.yaml"],
])
def test_the_old_config_flags_are_refused_with_the_positional_form(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "-c/--config and -s/--set are gone" in capsys.readouterr().err


def test_positional_errors_are_one_line(capsys):
    pull = str(CONFIGS / "label" / "pull-demo.yaml")
    assert main(["label", "pull", pull, "oops"]) == 2
    err = capsys.readouterr().err
    assert "'oops' is not an override of the form key.path=value" in err and len(err.strip().splitlines()) == 1
    assert main(["label", "pull", "push=runs/x", pull]) == 2
    assert f"'{pull}' comes after an override; the config file comes first" in capsys.readouterr().err
    assert main(["prepare", "nonsense"]) == 2
    assert "'nonsense' is neither a YAML config file nor a key=value override" in capsys.readouterr().err


def test_flags_may_stand_between_the_positionals():
    args = build_parser().parse_args(["label", "users", "add", "bob", "--role", "admin", "c.yaml", "a=1",
                                      "--workspace", "w", "b=2"])
    assert (args.name, args.role, args.workspace, args.config, args.overrides) == ("bob", "admin", ["w"], "c.yaml",
                                                                                  ["a=1", "b=2"])


def test_submit_takes_the_same_positionals_with_its_flags_anywhere():
    args = build_parser().parse_args(["submit", "ppo", "configs/ppo/demo.yaml", "--address", "http://head:8265",
                                      "train.steps=2", "--no-follow"])
    assert (args.stage, args.config, args.overrides, args.address, args.no_follow) == (
        "ppo", "configs/ppo/demo.yaml", ["train.steps=2"], "http://head:8265", True)


def test_submit_runs_the_table_stages_marked_for_ray_jobs():
    from rlhf.cli.submit_cmd import STAGE_COMMANDS
    from rlhf.stages import STAGES

    assert STAGE_COMMANDS == {e.name: list(e.command) for e in STAGES if e.submit}
    assert STAGE_COMMANDS["ppo"] == ["train", "ppo"] and "eval_human" not in STAGE_COMMANDS


# --- --help imports no heavy library ---------------------------------------------------------------------

HEAVY = ("torch", "transformers", "ray", "deepspeed")


def _imported(*python_args: str) -> set[str]:
    """Top-level packages a fresh ``python -X importtime PYTHON_ARGS`` imported (it must exit 0)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *python_args], capture_output=True, text=True,
                          check=False, cwd=CONFIGS.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert lines, "python -X importtime wrote no import lines"
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines}


def _torch_free_helps() -> list[list[str]]:
    """``--help`` of the root, of the commands that are not stages, and of every stage whose config model lives
    in the torch-free ``rlhf.configs`` (or is the labeling service's, ``rlhf.labeling.config``)."""
    from rlhf.stages import STAGES

    helps = [[], ["config"], ["lineage"], ["model", "build-tiny"], ["submit"], ["label"], ["label", "serve", "start"],
             ["label", "users", "add"], ["label", "status"], ["eval-human"], ["eval-human", "push"]]
    helps += [list(entry.command) for entry in STAGES
              if entry.config.startswith("rlhf.configs.") and entry.name != "eval_human"]
    return [[*argv, "--help"] for argv in helps]


@pytest.mark.parametrize("argv", _torch_free_helps(), ids=lambda argv: " ".join(argv))
def test_help_imports_no_heavy_library(argv):
    assert not _imported("-m", "rlhf.cli", *argv) & set(HEAVY)


def test_the_import_check_sees_a_heavy_import():
    assert "torch" in _imported("-c", "import rlhf.models.loader")
