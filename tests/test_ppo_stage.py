"""The PPO stage's pure parts: config checks, reward shaping, advantage dispatch, the prompt stream,
placement planning and checkpoint bookkeeping (no model, no Ray)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlhf.core.config import ConfigError
from rlhf.roles.checkpoint import (
    ControllerState,
    DataPosition,
    checkpoint_folder,
    latest_checkpoint,
    load_controller_state,
    mark_complete,
    prune_checkpoints,
    save_controller_state,
    truncate_metrics,
)
from rlhf.roles.launcher import ResourcesConfig, plan_bundles
from rlhf.roles.weight_sync import WeightSyncError, check_probe
from rlhf.stages import load_config
from rlhf.stages.ppo import PromptStream, compute_advantages, derive_seed, normalise_rewards


def _load(*overrides: str):
    return load_config(None, ["reward.function=rlhf.world.demo:gold_rubric", *overrides], expect_stage="ppo")


@pytest.mark.parametrize(("overrides", "message"), [
    (["algorithm.advantage=grpo", "rollout.n=1"], "needs rollout.n >= 2"),
    (["rollout.prompts_per_step=10", "algorithm.mini_batch_size=4"], "must be a multiple of algorithm.mini_batch_size"),
    (["algorithm.mini_batch_size=12", "rollout.prompts_per_step=12", "learner.micro_batch_size=8"],
     "learner.micro_batch_size"),
    (["algorithm.advantage=rloo", "rollout.n=2", "critic.lr=1e-4"], "critic.* only applies"),
    (["model.lora.enabled=true", "learner.zero_stage=3"], "zero_stage=3 is not supported"),
    (["reward.model=/some/rm"], "exactly one of reward.model"),
    (["reward.normalize=true"], "reward.normalize uses a reward model"),
    (["critic.init_from=reward"], "critic.init_from=reward needs reward.model"),
    (["algorithm.truncation=penalty"], "truncation_penalty > 0"),
    (["resources.colocate=[[policy, reference], [reference]]"], "lists role 'reference' twice"),
    (["algorithm.kl.estimatr=k3"], "did you mean 'estimator'"),
])
def test_config_refuses_contradictions(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        _load(*overrides)


def test_defaults_are_a_valid_ppo_config():
    cfg = _load()
    assert cfg.uses_critic and cfg.algorithm.kl.placement == "reward"


def test_normalise_rewards_uses_stored_stats_then_clips():
    raw = torch.tensor([3.0, -1.0, 103.0])
    assert normalise_rewards(raw, mean=1.0, std=2.0, clip=10.0).tolist() == [1.0, -1.0, 10.0]
    assert normalise_rewards(raw, None, None, clip=None).tolist() == raw.tolist()


def _advantages(name, scores, kl, beta=0.0, kl_in_reward=False, values=None, group=2, **kw):
    mask = torch.ones_like(kl)
    return compute_advantages(name, scores, kl, beta, kl_in_reward, mask, mask, group, values, **kw)


def test_gae_dispatch_puts_kl_on_tokens_and_the_score_last():
    kl = torch.tensor([[0.2, 0.2]])
    adv, returns = _advantages("gae", torch.tensor([1.0]), kl, beta=0.5, kl_in_reward=True,
                               values=torch.zeros(1, 2), gamma=1.0, lam=1.0, whiten=False)
    # token rewards [-0.1, 1 - 0.1]; with V = 0 and gamma = lam = 1 the advantage is the reward-to-go
    assert torch.allclose(adv, torch.tensor([[0.8, 0.9]]))
    assert torch.allclose(returns, adv)


def test_group_estimators_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.5, 0.5])
    kl = torch.zeros(4, 3)
    grpo, _ = _advantages("grpo", scores, kl)
    assert torch.allclose(grpo[:, 0], torch.tensor([math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0]), atol=1e-5)
    rloo, returns = _advantages("rloo", scores, kl)
    assert rloo[:, 0].tolist() == [1.0, -1.0, 0.0, 0.0] and returns is None
    # sequence-level KL in the reward: sample 2 pays 0.5 * (3 * 0.2) = 0.3 against its twin
    kl_third = torch.zeros(4, 3)
    kl_third[2] = 0.2
    rloo_kl, _ = _advantages("rloo", scores, kl_third, beta=0.5, kl_in_reward=True)
    assert torch.allclose(rloo_kl[:, 0], torch.tensor([1.0, -1.0, -0.3, 0.3]))


def test_reinforce_pp_whitens_returns_over_the_batch():
    adv, _ = _advantages("reinforce_pp", torch.tensor([1.0, 0.0]), torch.zeros(2, 2))
    # returns [[1, 1], [0, 0]] -> mean 0.5, Bessel std sqrt(1/3)
    expected = (torch.tensor([[1.0, 1.0], [0.0, 0.0]]) - 0.5) / math.sqrt(1 / 3)
    assert torch.allclose(adv, expected, atol=1e-4)


def test_prompt_stream_resumes_where_it_stopped():
    prompts = [f"p{i}" for i in range(5)]
    whole = PromptStream(prompts, seed=3)
    expected = [whole.take(3) for _ in range(4)]
    assert sorted(expected[0] + expected[1][:2]) == sorted(prompts)  # an epoch is a permutation
    first = PromptStream(prompts, seed=3)
    got = [first.take(3), first.take(3)]
    resumed = PromptStream(prompts, seed=3, position=DataPosition(**vars(first.position)))
    got += [resumed.take(3), resumed.take(3)]
    assert got == expected
    assert derive_seed(1, "rollout", 2) == derive_seed(1, "rollout", 2) != derive_seed(1, "rollout", 3)


def test_plan_bundles_colocates_and_counts():
    res = ResourcesConfig(rollout_workers=2, learner_workers=2, colocate=[["policy", "critic", "reference"]],
                          policy={"num_cpus": 1}, critic={"num_cpus": 0.5}, reference={"num_cpus": 0.5},
                          rollout={"num_cpus": 1, "custom": {"gen": 0.1}})
    bundles, where = plan_bundles(res, ("rollout", "policy", "critic", "reference", "reward"))
    assert bundles == [{"CPU": 2.0}, {"CPU": 1.5}, {"CPU": 1.0, "gen": 0.1}, {"CPU": 1.0, "gen": 0.1}, {"CPU": 1.0}]
    assert where == {"policy": [0, 1], "critic": [0, 1], "reference": [0], "rollout": [2, 3], "reward": [4]}
    bundles, where = plan_bundles(res, ("rollout", "policy", "reference", "reward"))
    assert "critic" not in where and bundles[0] == {"CPU": 1.5}


def test_checkpoints_complete_latest_and_pruned(tmp_path):
    state = ControllerState(4, DataPosition(1, 7), {"type": "fixed", "value": 0.1}, [[1, 2]], [[3]], {"x": 1})
    for step in (2, 4, 6):
        folder = checkpoint_folder(tmp_path, step)
        folder.mkdir(parents=True)
        save_controller_state(folder, state)
        if step != 6:
            mark_complete(folder)
    latest = latest_checkpoint(tmp_path)
    assert latest == checkpoint_folder(tmp_path, 4)
    assert not checkpoint_folder(tmp_path, 6).exists()  # incomplete (killed while saving): removed
    assert load_controller_state(latest) == state
    prune_checkpoints(tmp_path, keep=1)
    assert not checkpoint_folder(tmp_path, 2).exists() and latest.exists()


def test_truncate_metrics_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "a": s}) for s in (1, 2, 2, 3, 4)]
    path.write_text("\n".join(rows) + "\n" + '{"step": 5, "a"')  # torn last line of a killed writer
    assert truncate_metrics(path, 2) == 3
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 2]


def test_probe_check_names_the_worker_and_tolerance():
    assert check_probe([[-1.0, -2.0]], [[-1.0, -2.00001]], 1e-3, worker=0, step=1) == pytest.approx(1e-5, abs=1e-7)
    with pytest.raises(WeightSyncError, match=r"step 3, rollout worker 1 .* 0\.5 nats"):
        check_probe([[-1.0]], [[-1.5]], 1e-3, worker=1, step=3)
    with pytest.raises(WeightSyncError, match="different tokens"):
        check_probe([[-1.0]], [[-1.0, -2.0]], 1e-3, worker=0, step=1)
