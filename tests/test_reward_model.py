"""``rlhf train rm``: config checks, tokenisation and scoring, and a killed-then-resumed run on Ray Train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.core.config import ConfigError
from rlhf.core.errors import UserError
from rlhf.data.pairs import PreferencePair, demo_pairs, write_pairs
from rlhf.models.config import TinyModelConfig
from rlhf.models.reward import REWARD_STATS_FILE, chat_ids, reward_scores
from rlhf.stages import load_config
from rlhf.stages.rm import _save_dataset, prepare_pairs

TINY = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=128", "model.tiny.tokenizer_corpus_size=300"]


def _tiny_path() -> str:
    from rlhf.models.loader import resolve_model_path

    return resolve_model_path("tiny", TinyModelConfig(hidden_size=64, num_layers=2, num_heads=2,
                                                      intermediate_size=128, tokenizer_corpus_size=300))


@pytest.mark.parametrize(("overrides", "needle"), [
    (["data.format=hh"], "data.format=hh needs data.path"),
    (["data.path=x.jsonl.gz", "data.format=hh", "loss.margin=strength"], "loss.margin=strength"),
    (["data.path=x.jsonl.gz", "data.format=hh", "eval.best_of_n_prompts=10"], "needs the demo world"),
    (["data.path=snap", "data.demo_prompts=10"], "data.demo_prompts only applies without data.path"),
    (["train.batch_size=30", "resources.num_workers=4"], "divisible by resources.num_workers x train.grad_accum"),
    (["model.lora.enabled=true", "deepspeed.zero_stage=3"], "zero_stage=3 is not supported"),
    (["eval.best_of_n=[1,3,4]"], "must divide the largest"),
    (["resources.num_wokers=2"], "did you mean 'num_workers'"),
    (["resources.worker.num_cpus=0"], "must reserve some resource"),
    (["ray.num_workers=2"], "unknown key 'ray'"),
    (["data.include=[snap1]"], "data.include adds pairs snapshots to a data.path snapshot"),
])
def test_config_rejects_contradictions(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, overrides, expect_stage="rm")


def test_included_snapshots_are_trained_on_and_are_stage_inputs(tmp_path):
    first, second = demo_pairs(4, 3, seed=1), demo_pairs(3, 3, seed=2)
    write_pairs(tmp_path / "r1", first)
    write_pairs(tmp_path / "r2", second)
    cfg = load_config(None, [f"data.path={tmp_path / 'r2'}", f"data.include=[{tmp_path / 'r1'}]"], expect_stage="rm")
    inputs, pairs, summary = prepare_pairs(cfg.data, str(tmp_path), 0)
    assert pairs == second + first
    assert inputs == {"pairs": tmp_path / "r2", "pairs:1": tmp_path / "r1"}
    assert summary["pairs_per_snapshot"] == [len(second), len(first)]
    missing = load_config(None, [f"data.path={tmp_path / 'r2'}", f"data.include=[{tmp_path / 'r0'}]"],
                          expect_stage="rm")
    with pytest.raises(UserError, match="data.include .*r0 does not exist"):
        prepare_pairs(missing.data, str(tmp_path), 0)


def test_dataset_matches_scoring_tokenisation_and_drops_long_pairs(tmp_path):
    from datasets import load_from_disk

    from rlhf.models.loader import load_tokenizer

    tokenizer = load_tokenizer(_tiny_path())
    pairs = demo_pairs(6, 2, seed=0)
    long_pair = PreferencePair(**{**pairs[0].__dict__, "chosen": "word " * 400})
    kept, dropped = _save_dataset([*pairs, long_pair], tokenizer, 128, tmp_path / "ds", "agreement", 2.0)
    assert dropped == 1 and kept == pairs
    data = load_from_disk(str(tmp_path / "ds"))
    assert data[0]["chosen_ids"] == chat_ids(tokenizer, pairs[0].conversation(), pairs[0].chosen)
    assert data[0]["margin"] == pytest.approx(2.0 * (2 * pairs[0].agreement - 1))
    with pytest.raises(UserError, match="raise train.max_length"):
        _save_dataset([long_pair], tokenizer, 128, tmp_path / "ds2", "none", 1.0)


def test_reward_scores_do_not_depend_on_batching(capfd):
    from rlhf.models.loader import load_model, load_tokenizer

    path = _tiny_path()
    model = load_model(path, "reward", device="cpu")
    tokenizer = load_tokenizer(path)
    pairs = demo_pairs(5, 2, seed=1)
    convs = [p.conversation() for p in pairs]
    replies = [p.chosen for p in pairs]
    one_by_one = reward_scores(model, tokenizer, convs, replies, batch_size=1, progress="scoring held-out")
    assert "scoring held-out: 100%" in capfd.readouterr().err  # long scoring shows its progress
    batched = reward_scores(model, tokenizer, convs, replies, batch_size=8)
    assert "scoring" not in capfd.readouterr().err
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert len({round(s, 4) for s in batched}) > 1


def _cli(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlhf.cli", "train", "rm", f"run.root={root}", "data.demo_prompts=40",
            "data.demo_candidates=3", "train.batch_size=8", "train.max_steps=60", "train.save_steps=2",
            "train.logging_steps=1", "eval.best_of_n=[1,2]", "eval.best_of_n_prompts=4", *TINY, *extra]


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    root = tmp_path / "runs"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(_cli(root), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    checkpoints = []
    while time.time() < deadline and first.poll() is None:
        checkpoints = list(root.glob("rm/*/checkpoints/checkpoint-*/trainer_state.json"))
        if checkpoints:
            break
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert checkpoints, "no checkpoint was written before the deadline"
    stage_dir = checkpoints[0].parents[2]
    assert not (stage_dir / "manifest.json").exists()

    second = subprocess.run(_cli(root), check=False, env=env, capture_output=True,
                            text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "rm: resuming from" in second.stdout
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["train/resumed_from_step"] >= 2 and metrics["train/global_step"] > metrics["train/resumed_from_step"]
    steps = [json.loads(line)["step"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and max(steps) == metrics["train/global_step"]

    stats = json.loads((stage_dir / "model" / REWARD_STATS_FILE).read_text())
    assert stats["count"] > 0 and stats["std"] > 0
    report = json.loads((stage_dir / "eval.json").read_text())
    assert 0.0 <= report["summary"]["accuracy"] <= 1.0 and report["accuracy_by_agreement"]
    assert [row["n"] for row in report["best_of_n"]] == [1, 2] and report["calibration"]
    assert list((stage_dir / "tensorboard").rglob("events.out.tfevents.*"))
    manifest = json.loads((stage_dir / "manifest.json").read_text())
    assert "pairs" in manifest["inputs"] and not (stage_dir / "checkpoints").exists()

    third = subprocess.run(_cli(root), check=False, env=env, capture_output=True,
                           text=True, timeout=120)
    assert third.returncode == 0 and "up to date, skipping" in third.stdout
