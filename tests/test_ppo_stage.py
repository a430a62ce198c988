"""The PPO stage's parts that need no model and no Ray: config checks, the training and held-out prompts,
the roles' specs, the prompt stream, placement planning, splitting work over actors and checkpoint
bookkeeping. (The RL math is tested in tests/test_rl_*.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhf.core.config import ConfigError
from rlhf.data.stream import DataPosition, PromptStream, derive_seed
from rlhf.eval.heldout import heldout_prompts
from rlhf.roles.checkpoint import (
    ControllerState,
    checkpoint_folder,
    latest_checkpoint,
    load_controller_state,
    mark_complete,
    prune_checkpoints,
    save_controller_state,
    truncate_metrics,
)
from rlhf.roles.group import rows, split
from rlhf.roles.launcher import ResourcesConfig, plan_bundles
from rlhf.roles.weight_sync import WeightSyncError, check_probe
from rlhf.stages import load_config
from rlhf.stages.ppo import role_specs, training_prompts


def _load(*overrides: str):
    return load_config(None, ["reward.function=rlhf.world.demo:gold_rubric", *overrides], expect_stage="ppo")


@pytest.mark.parametrize(("overrides", "message"), [
    (["algorithm.advantage=grpo", "rollout.n=1"], "needs rollout.n >= 2"),
    (["rollout.prompts_per_step=10", "algorithm.mini_batch_size=4"], "must be a multiple of algorithm.mini_batch_size"),
    (["algorithm.mini_batch_size=12", "rollout.prompts_per_step=12", "learner.micro_batch_size=8"],
     "learner.micro_batch_size"),
    (["algorithm.advantage=rloo", "rollout.n=2", "critic.lr=1e-4"], "critic.* only applies"),
    (["model.lora.enabled=true", "deepspeed.zero_stage=3"], "deepspeed.zero_stage=3 is not supported"),
    (["deepspeed.offload_optimizer=true"], "deepspeed.offload_optimizer needs deepspeed.zero_stage 2 or 3"),
    (["learner.zero_stage=2"], "unknown key 'zero_stage'"),
    (["rollout.temperature=0"], "rollout.temperature must be > 0"),
    (["eval.temperature=0.5"], "unknown key 'temperature'"),
    (["reward.model=/some/rm"], "exactly one of reward.model"),
    (["reward.normalize=true"], "reward.normalize uses a reward model"),
    (["critic.init_from=reward"], "critic.init_from=reward needs reward.model"),
    (["algorithm.truncation=penalty"], "truncation_penalty > 0"),
    (["resources.colocate=[[policy, reference], [reference]]"], "lists role 'reference' twice"),
    (["algorithm.kl.estimatr=k3"], "did you mean 'estimator'"),
    (["rollout.asynchronous=true"], "set algorithm.rollout_correction=tis"),
    (["algorithm.behaviour_logprobs=rollout", "algorithm.rollout_correction=tis"],
     "needs algorithm.behaviour_logprobs=learner"),
    (["rollout.asynchronous=true", "algorithm.rollout_correction=tis", "rollout.engine=vllm",
      "resources.rollout.num_gpus=0.5", "resources.policy.num_gpus=0.5", "resources.colocate=[[rollout, policy]]",
      "rollout.vllm.gpu_memory_utilization=0.3"], "rollout.vllm.sleep=off"),
])
def test_config_refuses_contradictions(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        _load(*overrides)


@pytest.mark.parametrize("overrides, engine", [
    ([], True), (["algorithm.rollout_correction=tis"], False), (["model.dtype=bfloat16"], False),
    (["rollout.asynchronous=true", "algorithm.rollout_correction=tis"], False),
    (["algorithm.behaviour_logprobs=learner"], False),
    (["algorithm.behaviour_logprobs=rollout", "model.dtype=bfloat16"], True),
], ids=["default", "tis", "bf16", "asynchronous", "learner", "rollout"])
def test_the_engine_gives_the_behaviour_log_probs_where_they_match_the_learners(overrides, engine):
    assert _load(*overrides).behaviour_from_rollout is engine


def test_the_ppo_config_imports_no_torch():
    code = "import sys, rlhf.configs.ppo, rlhf.stages; rlhf.stages.config_class('ppo'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_are_a_valid_ppo_config():
    cfg = _load()
    assert cfg.uses_critic and cfg.algorithm.kl.placement == "reward"


def test_training_prompts_never_include_a_held_out_prompt(tmp_path):
    cfg = _load("eval.prompts=8", "data.demo_prompts=64")
    held = heldout_prompts(cfg.eval, cfg.run.seed)
    assert len(held) == 8
    train = training_prompts(cfg, held)
    assert train and not set(train) & set(held)
    # A prompt file that repeats held-out prompts: they are dropped from training, the rest kept in order.
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["mine 1", held[0], "mine 2", held[3]]))
    assert training_prompts(_load(f"data.path={path}"), held) == ["mine 1", "mine 2"]


def test_role_specs_read_the_config_in_one_place():
    policy = "/models/sft"  # no file is read: the critic starts from the policy
    cfg = _load("resources.learner_workers=2", "learner.micro_batch_size=4", "algorithm.mini_batch_size=16",
                "resources.policy.num_cpus=3", "resources.rollout.num_cpus=0.5", "deepspeed.zero_stage=2",
                "learner.lr=3e-4", "critic.lr=2e-3", "model.dtype=bfloat16")
    specs = role_specs(cfg, policy)
    assert (specs.policy.lr, specs.policy.grad_accum_steps, specs.policy.threads) == (3e-4, 2, 3)
    assert specs.policy.deepspeed.zero_stage == 2 and specs.policy.zero_stage == 2 and specs.policy.dtype == "bfloat16"
    assert specs.critic is not None and specs.critic.lr == 2e-3 and specs.critic_fresh_head  # no RM: from the policy
    assert specs.critic.model_path == policy
    assert (specs.rollout.model_path, specs.rollout.threads, specs.rollout.vllm) == (policy, 1, None)
    assert specs.reward.function == "rlhf.world.demo:gold_rubric" and specs.reward.model is None
    assert role_specs(_load("algorithm.advantage=grpo", "rollout.n=2"), policy).critic is None
    assert role_specs(_load(), policy).policy.zero_stage == 0  # unset: ZeRO 0


def test_work_is_split_contiguously_over_actors():
    assert split(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert split(["a"], 3) == [["a"], [], []]
    assert [r.tolist() for r in rows(5, 2)] == [[0, 1, 2], [3, 4]]
    # a local Ray gets every role's CPUs, rounded up: 1.5 (rollout) + 2 x 0.5 (policy) + 2 x 1 (critic) + 1 + 1
    assert ResourcesConfig(rollout={"num_cpus": 1.5}, policy={"num_cpus": 0.5}, learner_workers=2).cpus() == 7


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
