"""``rollout.asynchronous``: the rollout workers sample step t+1 while the learners train step t.

One seeded GRPO run each way from the SFT test policy, with the gold rubric as the reward and TIS on in
both (the two configs differ in ``rollout.asynchronous`` alone):

* synchronous, every batch comes from the weights just synced: staleness 0 at every step, and the rollout
  engine's log-probs of its own replies equal the learner's (the behaviour policy is the current one);
* asynchronous, from step 2 every batch was sampled by the weights of one sync before (the worker reports
  the version it generated with: staleness 1), so the rollout log-probs are measurably off the learner's,
  the TIS weights are no longer all 1, and the run still learns: the held-out gold score rises over the
  starting policy's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.stages import load_config

pytestmark = pytest.mark.slow

STEPS = 10
ARGS = ["reward.function=rlhf.world.demo:gold_rubric", "algorithm.advantage=grpo", "rollout.n=4",
        "rollout.prompts_per_step=8", "rollout.max_new_tokens=24", "algorithm.mini_batch_size=16",
        "learner.micro_batch_size=16", "learner.lr=5e-4", "algorithm.kl.placement=loss", "algorithm.kl.estimator=k3",
        "algorithm.kl.coef=0.04", "algorithm.rollout_correction=tis", f"train.steps={STEPS}", "eval.prompts=48",
        "eval.sampling.max_new_tokens=24", "data.demo_prompts=96", "train.progress=false",
        "resources.object_store_mb=200"]


def _run(root: Path, policy: Path, asynchronous: bool) -> list[dict]:
    from rlhf.stages.ppo import run_ppo

    cfg = load_config(None, [f"run.root={root}", f"model.name_or_path={policy}", *ARGS,
                             f"rollout.asynchronous={str(asynchronous).lower()}"], expect_stage="ppo")
    folder = run_ppo(cfg)  # type: ignore[arg-type]
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_asynchronous_rollout_is_one_step_stale_and_learns(sft_policy, tmp_path):
    sync = _run(tmp_path / "sync", sft_policy, asynchronous=False)
    assert [row["rollout/staleness"] for row in sync] == [0.0] * STEPS
    assert max(row["rollout/logprob_gap"] for row in sync) < 1e-4

    rows = _run(tmp_path / "async", sft_policy, asynchronous=True)
    assert [row["rollout/staleness"] for row in rows] == [0.0] + [1.0] * (STEPS - 1)
    assert rows[0]["rollout/logprob_gap"] < 1e-4  # step 1: sampled by the starting weights, which it trains
    later = rows[1:]
    assert min(row["rollout/logprob_gap"] for row in later) > 1e-2, "step t+1 was not sampled by older weights"
    assert all(row["rollout/is_weight_mean"] != 1.0 for row in later)
    assert all(row["timing/compute/rollout"] > 0 for row in rows[:-1])  # the breakdown times the sampling
    final = rows[-1]
    assert final["eval/gold_mean"] >= final["eval/gold_mean_baseline"] + 0.05, final
