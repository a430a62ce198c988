"""The CLI: every subcommand has --help; config commands report one-line errors."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from rlhf.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, prefix: list[str]):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, prefix + [name])


COMMANDS = list(_walk(build_parser(), []))


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


@pytest.mark.parametrize("argv", [
    ["label", "pull", "configs/label/pull-demo.yaml", "push=runs/label_push/demo-1", "min_votes=2"],
    ["label", "pull", "-c", "configs/label/pull-demo.yaml", "-s", "push=runs/label_push/demo-1", "-s", "min_votes=2"],
    ["label", "pull", "-c", "configs/label/pull-demo.yaml", "push=runs/label_push/demo-1", "min_votes=2"],
])
def test_label_loop_commands_take_the_positional_form_of_the_other_stages(argv):
    from rlhf.cli.label_loop_cmd import _config

    cfg = _config(build_parser().parse_args(argv), "label_pull")
    assert cfg.push == "runs/label_push/demo-1" and cfg.min_votes == 2
    assert cfg.run.name == "demo"  # from the file (the built-in default is 'run')


def test_label_loop_positional_errors_are_one_line(capsys):
    assert main(["label", "pull", "configs/label/pull-demo.yaml", "oops"]) == 2
    assert "'oops' is not an override of the form key.path=value" in capsys.readouterr().err
    assert main(["label", "pull", "-c", "configs/label/push-demo.yaml", "configs/label/pull-demo.yaml"]) == 2
    assert "two config files" in capsys.readouterr().err
