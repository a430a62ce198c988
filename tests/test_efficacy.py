"""Efficacy: preference training makes the policy better by the gold rubric, and only an honest signal does.

The chain, seeded: the tiny SFT policy of the shared ``sft_policy`` fixture -> demo-world pairs from honest
simulated annotators, written as a pairs snapshot (:func:`rlhf.data.pairs.write_pairs`, so DPO reads them
the way it reads a labelled snapshot) -> DPO (RPO: sigmoid loss plus the chosen replies' NLL) -> the DPO
stage's held-out evaluation, which samples the DPO policy and its reference (the SFT policy) on the same
held-out prompts with the same seed and scores both by ``gold_rubric``. The gain is
``gold_mean - gold_mean_baseline``.

The same chain with every pair's chosen and rejected swapped is the efficacy test with a broken
preference signal: it must not reach the margin, which shows the assertion can fail.

Measured gold gains (DPO minus SFT, 128 held-out prompts, paired standard error about 0.03), 25 DPO steps:

=========  ======  ======  ======  ======
run.seed   0       1       2       3
=========  ======  ======  ======  ======
honest     +0.110  +0.167  +0.175  +0.175
swapped    -0.198  -0.190
=========  ======  ======  ======  ======

(SFT's held-out gold mean is about 0.30-0.32.) With ``train.lr=1e-4`` the honest gains were +0.060 and +0.164
on 64 prompts (seeds 0, 1): too close to the margin on seed 0, hence 2e-4 and 128 prompts.

Cost per case on 2 busy CPU cores: 2.5-3 minutes (Ray start, reference log-probs and 25 steps about 45 s, then
128 replies sampled from each of DPO and SFT about 65 s), on top of the shared SFT fixture.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rlhf.data.pairs import PreferencePair, demo_pairs, write_pairs
from rlhf.stages import load_config
from rlhf.stages.dpo import run_dpo

pytestmark = pytest.mark.slow

# Smallest gold gain over SFT that counts as "DPO helped". Measured +0.11 to +0.18 over seeds 0-3 (seed 0, the one
# tested, is the lowest: about 2 paired standard errors above this); reversed pairs measured -0.19 and -0.20.
MIN_GOLD_GAIN = 0.05

PAIR_PROMPTS = 400  # demo prompts ranked by the annotators; DPO trains on each one's best vs worst reply
DPO_OVERRIDES = ["data.train_pairs=best_vs_worst", "data.eval_fraction=0.0", "loss.type=sigmoid", "loss.beta=0.1",
                 "loss.sft_weight=1.0", "train.lr=2e-4", "train.epochs=1", "train.batch_size=16",
                 "train.save_steps=1000", "train.logging_steps=5", "eval.prompts=128", "eval.bootstrap=100"]


def swapped(pair: PreferencePair) -> PreferencePair:
    """``pair`` with chosen and rejected exchanged: the annotators' preference reversed."""
    return dataclasses.replace(pair, chosen=pair.rejected, rejected=pair.chosen, chosen_id=pair.rejected_id,
                               rejected_id=pair.chosen_id, provenance={**pair.provenance, "swapped": True})


def efficacy_chain(policy: Path, root: Path, seed: int, swap: bool, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Run the chain from ``policy`` (an SFT stage folder) under ``root``; the DPO stage's held-out summary.

    ``swap`` reverses every pair before the snapshot is written; ``extra`` overrides re-measure other settings.
    """
    pairs = demo_pairs(PAIR_PROMPTS, 4, seed=seed)
    if swap:
        pairs = [swapped(p) for p in pairs]
    snapshot = root / "pairs" / ("swapped" if swap else "honest")
    write_pairs(snapshot, pairs)
    cfg = load_config(None, [f"run.root={root}", f"run.seed={seed}", f"model.name_or_path={policy}",
                             f"data.path={snapshot}", *DPO_OVERRIDES, *extra], expect_stage="dpo")
    stage_dir = run_dpo(cfg)
    return json.loads((stage_dir / "eval.json").read_text())["summary"]


@pytest.mark.parametrize("swap", [False, True], ids=["honest-pairs", "swapped-pairs"])
def test_dpo_beats_sft_on_gold_only_with_honest_preferences(sft_policy, tmp_path, swap):
    summary = efficacy_chain(sft_policy, tmp_path / "runs", seed=0, swap=swap)
    gain = summary["gold_mean"] - summary["gold_mean_baseline"]
    print(f"\ngold: DPO {summary['gold_mean']:.3f} SFT {summary['gold_mean_baseline']:.3f} gain {gain:+.3f} "
          f"win rate {summary['win_rate']:.2f} ({'swapped' if swap else 'honest'} pairs)")
    # One check for both cases: honest pairs must reach the margin; reversed pairs must fail the same check.
    assert (gain >= MIN_GOLD_GAIN) == (not swap), (
        f"gold gain {gain:+.3f} vs margin {MIN_GOLD_GAIN} with {'swapped' if swap else 'honest'} pairs")
