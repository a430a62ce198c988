"""``rlhf train ppo`` end to end under a local Ray on the tiny model: PPO with a reward model and a critic
initialised from it, on two data-parallel learner ranks with ZeRO-2, gradient checkpointing and truncated
importance sampling (broadcast sync); and RLOO with
object-store sync, where one deliberately skipped weight sync must fail the probe check (and, between probe
steps, show in the log-prob gap the learner measures). (GRPO with a
reward function runs in test_ppo_resume.py, REINFORCE++ on two nodes in test_ppo_placement.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf.eval.heldout import heldout_prompts
from rlhf.models.config import TinyModelConfig
from rlhf.roles.weight_sync import WeightSyncError
from rlhf.stages import load_config

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
SMALL = ["rollout.prompts_per_step=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=4",
         "algorithm.mini_batch_size=8", "eval.prompts=4", "eval.sampling.max_new_tokens=8", "data.demo_prompts=16",
         "train.progress=false", "learner.lr=1e-3"]


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from rlhf.core.cluster import worker_env

    ray.init(num_cpus=6, include_dashboard=False, object_store_memory=300 * MIB,
             runtime_env={"env_vars": worker_env()}, logging_config=ray.LoggingConfig(log_level="ERROR"))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from rlhf.models.loader import resolve_model_path

    return resolve_model_path("tiny", TinyModelConfig())


@pytest.fixture(scope="module")
def reward_model(tiny_path, tmp_path_factory) -> Path:
    """An untrained tiny reward model laid out like an RM stage folder (model/ + reward_stats.json)."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.models.loader import load_tokenizer

    folder = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=1)
    tokenizer = load_tokenizer(tiny_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    (folder / "model" / "reward_stats.json").write_text(json.dumps({"mean": 0.1, "std": 0.5}))
    return folder


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _config(root: Path, *overrides: str):
    return load_config(None, [f"run.root={root}", *SMALL, *overrides], expect_stage="ppo")


def _run(root: Path, *overrides: str) -> Path:
    from rlhf.stages.ppo import run_ppo

    return run_ppo(_config(root, *overrides))  # type: ignore[arg-type]


def _changed(start: str, trained: Path) -> bool:
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(start).state_dict()
    after = AutoModelForCausalLM.from_pretrained(trained).state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def test_ppo_with_reward_model_and_critic_on_two_learner_ranks(local_ray, tiny_path, reward_model, tmp_path):
    overrides = (f"reward.model={reward_model}", "train.steps=2", "train.save_steps=1", "rollout.n=2",
                 "critic.lr=1e-3", "resources.learner_workers=2", "deepspeed.zero_stage=2",
                 "resources.policy.num_cpus=0.5", "resources.critic.num_cpus=0.5",
                 "algorithm.rollout_correction=tis", "learner.gradient_checkpointing=true")
    run_dir = _run(tmp_path, *overrides)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {"model", "metrics.jsonl", "placement.json", "samples.jsonl"} <= set(manifest["outputs"])
    assert manifest["inputs"]["reward_model"]["path"].endswith("/model")
    rows = [r for r in _rows(run_dir) if "rollout/score_mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row["rollout/sync_probe_diff"] <= 1e-3
        # The transformers engine and the learner compute the same log-probs: the importance weights are ~1.
        assert row["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-3) and row["rollout/is_weight_capped"] == 0
        assert {"train/policy_loss", "train/critic_value_loss", "objective/kl", "timing/generation",
                "timing/sync", "timing/compute/policy_logprobs"} <= set(row)  # TIS: the learner recomputes
    # rewards are normalised with the stored statistics: reward = (score - 0.1) / 0.5
    assert rows[0]["rollout/reward_mean"] == pytest.approx((rows[0]["rollout/score_mean"] - 0.1) / 0.5, rel=1e-4)
    assert "eval/win_rate" in rows[-1] and 0 <= rows[-1]["eval/win_rate_low"] <= rows[-1]["eval/win_rate_high"] <= 1
    # the held-out prompts are those every stage evaluates with this seed and eval section
    cfg = _config(tmp_path, *overrides)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == heldout_prompts(cfg.eval, cfg.run.seed)
    baseline = [json.loads(line) for line in (run_dir / "eval_baseline.jsonl").read_text().splitlines()]
    assert [s["baseline_reply"] for s in samples] == [b["reply"] for b in baseline]
    assert rows[-1]["eval/gold_mean"] == pytest.approx(sum(s["gold"] for s in samples) / len(samples))
    assert _changed(tiny_path, run_dir / "model")
    placement = json.loads((run_dir / "placement.json").read_text())
    assert len(placement["policy"]) == len(placement["critic"]) == 2
    assert not (run_dir / "checkpoints").exists()


def _skipping_the_second_sync(monkeypatch) -> list[int]:
    from rlhf.roles import group

    real_sync = group.sync_weights
    calls: list[int] = []

    def skip_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) != 2:
            real_sync(*args, **kwargs)

    monkeypatch.setattr(group, "sync_weights", skip_the_second)
    return calls


def test_a_skipped_weight_sync_fails_the_probe_check(local_ray, reward_model, tmp_path, monkeypatch):
    calls = _skipping_the_second_sync(monkeypatch)
    with pytest.raises(WeightSyncError, match="weight sync of step 2, rollout worker 0"):
        _run(tmp_path, f"reward.model={reward_model}", "algorithm.advantage=rloo", "rollout.n=2", "train.steps=3",
             "eval.prompts=0", "sync.method=object_store", "sync.probe_every=2")
    assert len(calls) == 2


def test_between_probes_the_logprob_gap_shows_a_skipped_sync(local_ray, reward_model, tmp_path, monkeypatch):
    """With the default sync.probe_every the probe runs after the first and the last step's sync only; a sync
    skipped in between shows in the next step's rollout/logprob_gap (engine against learner)."""
    calls = _skipping_the_second_sync(monkeypatch)
    run_dir = _run(tmp_path, f"reward.model={reward_model}", "algorithm.advantage=rloo", "rollout.n=2",
                   "train.steps=3", "eval.prompts=0", "algorithm.mini_batch_size=4")  # two updates a step
    rows = {r["step"]: r for r in _rows(run_dir) if "rollout/score_mean" in r}
    assert len(calls) == 3
    assert [s for s in sorted(rows) if "rollout/sync_probe_diff" in rows[s]] == [1, 3]
    # the engine's log-probs are the behaviour log-probs (fp32, synchronous): no learner pass, and the learner
    # measures the gap on each step's first mini-batch before updating
    assert not any("timing/compute/policy_logprobs" in row for row in rows.values())
    assert rows[1]["rollout/logprob_gap"] < 1e-4 and rows[2]["rollout/logprob_gap"] < 1e-4
    assert rows[3]["rollout/logprob_gap"] > 1e-3  # step 3 sampled with step 1's weights


def test_the_reference_passes_of_the_mini_batches_make_the_whole_batchs(local_ray, tiny_path):
    """With the KL in the loss the reference log-probs go shard by shard in training order; gathered, they are
    those of one pass over the batch, row for row."""
    import ray

    from rlhf.roles.group import start_reference
    from rlhf.roles.inference import ReferenceActor, ReferenceSpec
    from rlhf.roles.launcher import Roles
    from rlhf.rollout import SamplingParams, TransformersRolloutEngine
    from rlhf.rollout.containers import Rollout

    engine = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    samples = engine.generate(["Where is my order #B55555?", "Can I get a refund?", "Thanks!"],
                              SamplingParams(n=4, max_new_tokens=8), seed=0)
    tokens = Rollout.from_samples(samples, engine.tokenizer.pad_token_id, n=4).tokens
    reference = ray.remote(ReferenceActor).options(num_cpus=1).remote(
        ReferenceSpec(tiny_path, device="cpu", batch_size=4))
    roles = Roles(group=None, policy=[None, None], reference=reference)  # two learner ranks
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))
    shards = start_reference(roles, tokens, list(order.split(6)), 1.0)
    assert [len(refs) for refs in shards.shards] == [2, 2]
    whole = ray.get(reference.logprobs.remote(tokens, 1.0))
    gathered = shards.gather(len(tokens), tokens.response_width)
    assert whole.abs().sum() > 0 and torch.allclose(gathered, whole, atol=1e-5)
    ray.kill(reference)


def test_an_update_takes_its_reference_log_probs_from_a_pass_still_running(local_ray, tiny_path):
    """Given the object ref of its reference pass (in a list, so Ray hands it over unresolved), a learner
    waits for it after its forward pass and trains exactly as with the tensor in hand."""
    import ray

    from rlhf.rl import PolicyLossSettings
    from rlhf.roles.learner import PolicyLearner, merge_rank_stats
    from rlhf.rollout import SamplingParams, TransformersRolloutEngine
    from rlhf.rollout.containers import Batch, Rollout
    from rlhf.trainers.deepspeed_engine import LearnerSpec
    from rlhf.trainers.hf import DeepSpeedSettings
    from rlhf.utils.distributed import free_port

    engine = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    samples = engine.generate(["Where is my order #B55555?", "Can I get a refund?"],
                              SamplingParams(n=4, max_new_tokens=8), seed=0)
    rollout = Rollout.from_samples(samples, engine.tokenizer.pad_token_id, n=4)

    def learner() -> PolicyLearner:
        spec = LearnerSpec(model_path=tiny_path, deepspeed=DeepSpeedSettings(), device="cpu", lr=1e-3,
                           micro_batch_size=4, grad_accum_steps=2)
        rank = PolicyLearner(spec, rank=0, world_size=1, backend="gloo")
        rank.setup("127.0.0.1", free_port())
        return rank

    in_hand, pending = learner(), learner()
    mask = rollout.tokens.response_mask.float()
    batch = Batch(rollout.tokens, mask, in_hand.logprobs(rollout.tokens, 1.0),
                  torch.tensor([1.0, -1.0] * 4).unsqueeze(1) * mask)
    reference = batch.old_logprobs - 0.3 * mask
    settings, counts = PolicyLossSettings(kl_in_loss=True), (batch.token_count, batch.sequence_count)
    expected = merge_rank_stats([in_hand.train_minibatch(batch, settings, 0.5, *counts, ref_logprobs=reference)])
    got = merge_rank_stats([pending.train_minibatch(batch, settings, 0.5, *counts,
                                                    ref_logprobs=[ray.put(reference)])])
    assert expected["kl_loss"] > 0 and got == pytest.approx(expected)
    assert all(torch.equal(v, pending.weights()[k]) for k, v in in_hand.weights().items())
