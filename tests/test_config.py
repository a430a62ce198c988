"""Strict configs: unknown keys, suggestions, overrides, contradictions, stage refusal."""

from __future__ import annotations

import pytest

from rlhf.core.config import ConfigError, apply_overrides
from rlhf.stages import load_config


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_misspelled_nested_key_is_named_with_suggestion(tmp_path):
    path = write(tmp_path, "stage: sft\ntrain:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "train" in msg and "'lrr'" in msg and "did you mean 'lr'" in msg
    assert "\n" not in msg


def test_misspelled_top_level_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*did you mean 'train'"):
        load_config(write(tmp_path, "stage: sft\ntrian: {}\n"))


def test_override_applies_and_is_validated(tmp_path):
    cfg = load_config(write(tmp_path, "stage: sft\n"), ["train.lr=1e-5", "model.lora.enabled=true"])
    assert cfg.train.lr == pytest.approx(1e-5)
    assert cfg.model.lora.enabled is True
    with pytest.raises(ConfigError, match=r"unknown key 'rr'.*did you mean 'r'"):
        load_config(write(tmp_path, "stage: sft\n"), ["model.lora.rr=4"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": 3}, ["train.lr=1"])


def test_contradictions_name_both_fields(tmp_path):
    with pytest.raises(ConfigError, match=r"model.tiny is set but model.name_or_path is 'gpt2'"):
        load_config(write(tmp_path, "stage: sft\nmodel:\n  name_or_path: gpt2\n  tiny: {hidden_size: 64}\n"))
    with pytest.raises(ConfigError, match="offload_optimizer needs deepspeed.zero_stage 2 or 3"):
        load_config(write(tmp_path, "stage: sft\ndeepspeed: {offload_optimizer: true}\n"))


def test_wrong_type_is_not_coerced_silently(tmp_path):
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(write(tmp_path, "stage: sft\ntrain: {batch_size: many}\n"))


def test_stage_refuses_fields_it_does_not_implement(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'kl'"):
        load_config(write(tmp_path, "stage: sft\nkl: {coef: 0.1}\n"))


def test_file_for_another_stage_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="configures stage 'sft', not 'ppo'"):
        load_config(write(tmp_path, "stage: sft\n"), expect_stage="ppo")


def test_missing_and_unknown_stage(tmp_path):
    with pytest.raises(ConfigError, match="missing top-level 'stage'"):
        load_config(write(tmp_path, "train: {}\n"))
    with pytest.raises(ConfigError, match="unknown stage 'sfft'.*did you mean 'sft'"):
        load_config(write(tmp_path, "stage: sfft\n"))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(write(tmp_path, "stage: sft\ntrain: [unclosed\n"))


def test_defaults_load_without_file():
    cfg = load_config(None, expect_stage="sft")
    assert cfg.stage == "sft" and cfg.model.name_or_path == "tiny"
