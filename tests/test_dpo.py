"""``rlhf train dpo``: loss options, and a 2-worker ZeRO-2 run on Ray Train end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhf.core.config import ConfigError
from rlhf.data.pairs import demo_pairs
from rlhf.eval.heldout import heldout_prompts
from rlhf.stages import load_config
from rlhf.stages.dpo import flip_rate

TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=128", "model.tiny.tokenizer_corpus_size=300"]


def test_flip_rate_from_agreement():
    noisy = demo_pairs(40, 3, seed=0, annotators=5, noise=0.2)
    expected = sum(1 - p.agreement for p in noisy) / len(noisy)
    assert 0 < flip_rate(noisy) == pytest.approx(expected)
    assert flip_rate(demo_pairs(10, 2, seed=0)) == 0.0


@pytest.mark.parametrize(("overrides", "needle"), [
    (["loss.label_smoothing=0.1"], "only applies to loss.type=robust"),
    (["loss.type=ipo", "loss.label_smoothing=agreement"], "only applies to loss.type=robust"),
    (["loss.type=robust", "loss.label_smoothing=0.5"], r"must be in \[0, 0.5\)"),
    (["data.path=x.jsonl.gz", "data.format=hh"], "set eval.prompts=0, or eval.path"),
    (["data.path=x.jsonl.gz", "data.format=hh", "eval.prompts=5"], "set eval.prompts=0, or eval.path"),
    (["train.batch_size=30", "resources.num_workers=4"], "divisible by resources.num_workers x train.grad_accum"),
    (["ray.num_workers=2"], "unknown key 'ray'"),
    (["eval.temperature=0.5"], "unknown key 'temperature'"),
    (["loss.type=hinge"], "loss.type"),
])
def test_config_rejects_contradictions(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides, expect_stage="dpo")


def test_hh_pairs_evaluate_on_a_prompt_file_or_not_at_all():
    for extra in (["eval.prompts=0"], ["eval.path=prompts.jsonl"]):
        cfg = load_config(None, ["data.path=x.jsonl.gz", "data.format=hh", *extra], expect_stage="dpo")
        assert cfg.data.format == "hh"  # type: ignore[attr-defined]


def test_agreement_smoothing_is_accepted_for_robust():
    cfg = load_config(None, ["loss.type=robust", "loss.label_smoothing=agreement"], expect_stage="dpo")
    assert cfg.loss.label_smoothing == "agreement"  # type: ignore[attr-defined]


@pytest.mark.slow
def test_two_worker_zero2_dpo_trains_and_reports_win_rate(tmp_path):
    root = tmp_path / "runs"
    overrides = [f"run.root={root}", "data.demo_prompts=24", "data.demo_candidates=3", "train.batch_size=8",
                 "train.max_steps=4", "train.save_steps=2", "train.logging_steps=1", "train.lr=1e-3",
                 "resources.num_workers=2", "deepspeed.zero_stage=2", "data.demo_annotators=5", "data.demo_noise=0.2",
                 "loss.type=robust", "loss.label_smoothing=agreement", "loss.sft_weight=0.5", "eval.prompts=6",
                 "eval.sampling.max_new_tokens=12", "eval.bootstrap=50", *TINY]
    cmd = [sys.executable, "-m", "rlhf.cli", "train", "dpo", *overrides]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    stage_dir = next(root.glob("dpo/*/manifest.json")).parent
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["train/global_step"] == 4
    assert 0.0 < metrics["train/label_smoothing"] < 0.5  # noisy annotators: some votes against the majority
    logged = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "train/loss" in row] == [1, 2, 3, 4]
    assert any("rewards/margins" in row for row in logged)
    report = json.loads((stage_dir / "eval.json").read_text())
    summary = report["summary"]
    assert 0.0 <= summary["win_rate_low"] <= summary["win_rate"] <= summary["win_rate_high"] <= 1.0
    assert report["prompts"] == 6 and {"gold_mean", "gold_mean_baseline", "tie_rate"} <= set(summary)
    assert metrics["eval/win_rate"] == summary["win_rate"]
    samples = [json.loads(line) for line in (stage_dir / "samples.jsonl").read_text().splitlines()]
    cfg = load_config(None, overrides, expect_stage="dpo")
    assert [s["prompt"] for s in samples] == heldout_prompts(cfg.eval, cfg.run.seed)  # what SFT and PPO evaluate
    assert all({"reply", "gold", "baseline_reply", "baseline_gold"} <= set(s) for s in samples)

    from safetensors.torch import load_file

    trained = load_file(str(stage_dir / "model" / "model.safetensors"))
    base = load_file(_tiny_weights())
    changed = [k for k in trained if k in base and not (trained[k] == base[k]).all()]
    assert changed, "DPO left every weight unchanged"
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert {"pairs", "policy"} <= set(manifest["inputs"])


def _tiny_weights() -> str:
    from rlhf.models.config import TinyModelConfig
    from rlhf.models.loader import resolve_model_path

    path = resolve_model_path("tiny", TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2,
                                                      intermediate_size=128, tokenizer_corpus_size=300))
    return f"{path}/model.safetensors"
