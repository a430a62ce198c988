"""Online DPO (``rlhf train dpo online.enabled=true``): config checks, the reward-model folder check, and a few
online steps of a tiny policy whose replies a tiny reward model ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rlhf.core.config import ConfigError
from rlhf.core.errors import UserError
from rlhf.stages import load_config
from rlhf.stages.dpo import ONLINE_LOG_KEYS, _last_logged, _reward_model_dir
from tests.test_dpo import TINY, _tiny_weights

ONLINE = ["online.enabled=true", "online.reward_model=runs/rm/x"]


@pytest.mark.parametrize(("overrides", "needle"), [
    (["online.enabled=true"], "online.enabled needs online.reward_model"),
    (["online.max_new_tokens=8"], "online.max_new_tokens only applies with online.enabled=true"),
    (["online.reward_model=runs/rm/x"], "online.reward_model only applies with online.enabled=true"),
    ([*ONLINE, "loss.type=robust"], "loss.type=robust is not supported online"),
    ([*ONLINE, "data.train_pairs=best_vs_worst"], "data.train_pairs=best_vs_worst only applies to offline DPO"),
    ([*ONLINE, "data.max_train_pairs=10"], "data.max_train_pairs only applies to offline DPO"),
    ([*ONLINE, "loss.sft_weight=0.5"], "loss.sft_weight only applies to offline DPO"),
    ([*ONLINE, "train.eval_steps=5"], "train.eval_steps only applies to offline DPO"),
    ([*ONLINE, "train.precompute_ref_log_probs=false"], "train.precompute_ref_log_probs only applies to offline"),
    ([*ONLINE, "online.max_new_tokens=256"], r"online.max_new_tokens \(256\) must be below train.max_length"),
    ([*ONLINE, "online.missing_eos_penalty=0"], "online.missing_eos_penalty"),
    ([*ONLINE, "online.temprature=0.5"], "did you mean 'temperature'"),
])
def test_config_rejects_what_online_dpo_does_not_do(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides, expect_stage="dpo")


def test_online_takes_sigmoid_or_ipo_and_is_off_by_default():
    assert not load_config(None, [], expect_stage="dpo").online.enabled  # type: ignore[attr-defined]
    cfg = load_config(None, [*ONLINE, "loss.type=ipo", "online.missing_eos_penalty=1.0", "online.prompts=50"],
                      expect_stage="dpo")
    assert cfg.online.enabled and cfg.online.missing_eos_penalty == 1.0  # type: ignore[attr-defined]


def test_reward_model_must_be_an_rm_folder_with_stats(tmp_path):
    with pytest.raises(UserError, match="online.reward_model .* holds no reward model"):
        _reward_model_dir(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="has no reward_stats.json"):
        _reward_model_dir(str(tmp_path))
    (tmp_path / "model" / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0}))
    assert _reward_model_dir(str(tmp_path)) == tmp_path / "model"
    assert _reward_model_dir(str(tmp_path / "model")) == tmp_path / "model"


def test_last_logged_online_metrics_enter_the_train_namespace(tmp_path):
    rows = [{"step": 1, "train/loss": 0.7, "objective/scores": 0.1, "rewards/chosen": 0.0},
            {"step": 2, "train/loss": 0.6, "objective/scores": 0.3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert _last_logged(tmp_path / "metrics.jsonl", ONLINE_LOG_KEYS) == {"train/objective/scores": 0.3,
                                                                          "train/rewards/chosen": 0.0}


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory) -> Path:
    """An untrained reward model on the tiny policy's shape and tokenizer, laid out like an RM stage folder."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.loader import load_tokenizer

    base = str(Path(_tiny_weights()).parent)
    folder = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    tokenizer = load_tokenizer(base)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "model" / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 0.5, "count": 10}))
    return folder


@pytest.mark.slow
def test_online_dpo_trains_on_reward_ranked_samples(tmp_path, tiny_reward_model):
    from safetensors.torch import load_file

    from rlhf.stages.dpo import run_dpo

    cfg = load_config(None, [
        f"run.root={tmp_path / 'runs'}", "data.demo_prompts=24", "data.demo_candidates=3", *ONLINE[:1],
        f"online.reward_model={tiny_reward_model}", "online.prompts=8", "online.max_new_tokens=8",
        "online.missing_eos_penalty=1.0", "train.batch_size=4", "train.max_steps=2", "train.logging_steps=1",
        "train.save_steps=100", "train.lr=1e-3", "eval.prompts=4", "eval.sampling.max_new_tokens=8",
        "eval.bootstrap=20", *TINY], expect_stage="dpo")
    stage_dir = run_dpo(cfg)  # type: ignore[arg-type]

    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["train/global_step"] == 2 and metrics["data/train_prompts"] == 8
    for key in ("train/objective/scores", "train/objective/scores_margin", "train/rewards/chosen",
                "train/rewards/margins", "train/val/contain_eos_token"):
        assert math.isfinite(metrics[key]), key
    assert metrics["train/objective/scores_margin"] >= 0  # the higher-scored reply is the chosen one
    logged = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "objective/scores" in row] == [1, 2]
    assert 0.0 <= metrics["eval/win_rate"] <= 1.0 and (stage_dir / "samples.jsonl").is_file()

    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert {"pairs", "policy", "reward_model"} <= set(manifest["inputs"])
    assert manifest["inputs"]["reward_model"]["path"].endswith(f"{tiny_reward_model.name}/model")
    trained = load_file(str(stage_dir / "model" / "model.safetensors"))
    base = load_file(_tiny_weights())
    assert any(not (trained[k] == base[k]).all() for k in trained if k in base), "online DPO changed no weight"
