"""The held-out evaluation shared by SFT, DPO and PPO."""

from __future__ import annotations

import json

import pytest

from rlhf.eval.heldout import (
    HeldoutConfig,
    gold_summary,
    heldout_comparison,
    heldout_prompts,
    score_replies,
    training_prompts_without,
    write_samples,
)


def test_the_same_section_and_seed_give_the_same_prompts_and_another_seed_others():
    cfg = HeldoutConfig(prompts=16)
    first = heldout_prompts(cfg, seed=3)
    assert len(first) == 16 and first == heldout_prompts(HeldoutConfig(prompts=16), seed=3)
    assert first != heldout_prompts(cfg, seed=4)
    assert heldout_prompts(HeldoutConfig(prompts=0), seed=3) == []


def test_a_prompt_file_or_prepare_folder_gives_its_eval_split(tmp_path):
    folder = tmp_path / "prepare"
    (folder / "prompts").mkdir(parents=True)
    rows = [{"id": str(i), "prompt": f"question {i}?"} for i in range(5)]
    (folder / "prompts" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert heldout_prompts(HeldoutConfig(prompts=3, path=str(folder)), seed=0) == [
        "question 0?", "question 1?", "question 2?"]


def test_training_prompts_never_include_a_heldout_prompt():
    assert training_prompts_without(["a", "b", "c", "b"], ["b"]) == ["a", "c"]


def test_scores_summary_and_comparison_at_hand_values(tmp_path):
    scores = score_replies(["p", "q"], ["x", "y"], "tests.test_heldout:_length_rubric")
    assert scores == [1.0, 1.0]
    summary = gold_summary([0.0, 0.5, 1.0])
    assert summary["gold_mean"] == pytest.approx(0.5) and summary["gold_levels"] == 3
    # wins, a tie, a loss: (1 + 1 + 0.5 + 0) / 4
    result = heldout_comparison([1.0, 0.8, 0.5, 0.1], [0.0, 0.2, 0.5, 0.9], n_boot=200)
    assert result["win_rate"] == pytest.approx(0.625)
    assert result["tie_rate"] == pytest.approx(0.25)
    assert result["win_rate_low"] <= result["win_rate"] <= result["win_rate_high"]
    write_samples(tmp_path / "samples.jsonl", ["p"], ["x"], [1.0], ["y"], [0.0])
    row = json.loads((tmp_path / "samples.jsonl").read_text())
    assert row == {"prompt": "p", "reply": "x", "gold": 1.0, "baseline_reply": "y", "baseline_gold": 0.0}


def test_sft_dpo_and_ppo_evaluate_the_same_heldout_prompts_by_default():
    from rlhf.stages import load_config

    configs = {stage: load_config(None, [], expect_stage=stage) for stage in ("sft", "dpo", "ppo")}
    for stage, cfg in configs.items():
        assert isinstance(cfg.eval, HeldoutConfig), f"{stage}'s eval section is not the shared HeldoutConfig"
    prompts = {stage: heldout_prompts(cfg.eval, cfg.run.seed) for stage, cfg in configs.items()}
    assert len(prompts["sft"]) == HeldoutConfig().prompts
    assert prompts["sft"] == prompts["dpo"] == prompts["ppo"]


def _length_rubric(prompt: str, reply: str) -> float:
    return float(len(reply))


def test_config_keys_show_the_sections_own_defaults():
    from rlhf.core.config import field_help

    rows = {key: default for key, default, _ in field_help(HeldoutConfig)}
    assert rows["sampling.max_new_tokens"] == "96"
    assert rows["sampling.temperature"] == "1.0"


def test_a_missing_heldout_file_is_a_one_line_error_naming_the_key(tmp_path):
    from rlhf.core.errors import UserError
    from rlhf.eval.heldout import heldout_inputs

    cfg = HeldoutConfig(prompts=4, path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="eval.path .*missing.jsonl does not exist"):
        heldout_inputs(cfg)
    with pytest.raises(UserError, match="eval.path"):
        heldout_prompts(cfg, seed=0)
    assert heldout_inputs(HeldoutConfig(prompts=0, path=str(tmp_path / "missing.jsonl"))) == {}
