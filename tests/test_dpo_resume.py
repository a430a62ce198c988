"""kill -9 in the middle of ``rlhf train dpo``, then the same command again: the run resumes from its last
complete checkpoint (weights, AdamW moments, the LR schedule, RNG and the data order), finishes, and every
step after the checkpoint, and the final weights, equal those of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.resume_helpers import (
    kill_9_when,
    max_weight_difference,
    metric_rows,
    model_weights,
    row_mismatches,
    run_stage,
    stage_command,
)

pytestmark = pytest.mark.slow

STEPS = 40
ARGS = ["data.demo_prompts=24", "data.demo_candidates=3", "train.batch_size=4", f"train.max_steps={STEPS}",
        "train.save_steps=4", "train.logging_steps=1", "train.lr=1e-3", "train.lr_scheduler=linear",
        "train.warmup_ratio=0.0", "eval.prompts=0", "model.tiny.hidden_size=64", "model.tiny.num_layers=2",
        "model.tiny.num_heads=2", "model.tiny.intermediate_size=128", "model.tiny.tokenizer_corpus_size=300"]
# Logged each step; all of them depend on the weights, the optimizer state and the batch drawn that step.
COMPARED = ("train/loss", "train/grad_norm", "train/learning_rate", "rewards/margins", "logps/chosen")


def _complete_checkpoint(root: Path) -> bool:
    return any(any(folder.glob("*.safetensors"))
               for folder in root.glob("dpo/*/checkpoints/checkpoint-*") if (folder / "trainer_state.json").is_file())


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    run_stage(stage_command("dpo", straight_root, ARGS), timeout=600)
    straight_dir = next(straight_root.glob("dpo/*/manifest.json")).parent

    kill_9_when(stage_command("dpo", killed_root, ARGS), tmp_path / "killed.log",
                lambda: _complete_checkpoint(killed_root), timeout=300)
    run_dir = killed_root / "dpo" / straight_dir.name  # same config and inputs: same content-addressed folder
    assert run_dir.is_dir() and not (run_dir / "manifest.json").exists(), "the kill landed before the end"
    killed = metric_rows(run_dir / "metrics.jsonl", "train/loss")

    resumed = run_stage(stage_command("dpo", killed_root, ARGS), timeout=600)
    found = re.search(r"dpo: resuming from \S*checkpoint-(\d+)", resumed.stdout)
    assert found, resumed.stdout[-3000:]
    start = int(found.group(1))
    assert 4 <= start < STEPS and start % 4 == 0, "the kill landed after a checkpoint and before the last one"
    assert (run_dir / "manifest.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/resumed_from_step"] == start and metrics["train/global_step"] == STEPS

    logged = metric_rows(run_dir / "metrics.jsonl", "train/loss")
    reference = metric_rows(straight_dir / "metrics.jsonl", "train/loss")
    assert all(reference[step]["train/grad_norm"] > 0 for step in reference), "nothing to learn"
    assert sorted(logged) == sorted(reference) == list(range(1, STEPS + 1))  # rows after the checkpoint: once
    assert all(logged[step]["time"] == killed[step]["time"] for step in range(1, start + 1)), "trained from step 0 again"
    mismatches = row_mismatches(logged, reference, list(range(start + 1, STEPS + 1)), COMPARED, tol=1e-5)
    difference = max_weight_difference(model_weights(run_dir / "model"), model_weights(straight_dir / "model"))
    assert not mismatches and difference <= 1e-6, "\n".join([*mismatches[:12], f"final weights differ by {difference}"])
