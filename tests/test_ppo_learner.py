"""The learner roles in one process (no Ray): a PPO step trains, accumulation and ZeRO-3 equivalence,
exact checkpoint restore, the critic, LoRA export, and the post-sync probe check."""

from __future__ import annotations

import pytest
import torch

from rlhf.models.config import LoraSettings, TinyModelConfig
from rlhf.rl import PolicyLossSettings
from rlhf.roles.learner import CriticLearner, PolicyLearner, RankStats, mean_stats, merge_rank_stats
from rlhf.roles.weight_sync import WeightSyncError, check_probe
from rlhf.rollout import SamplingParams, TransformersRolloutEngine
from rlhf.rollout.containers import Batch, Rollout
from rlhf.trainers.deepspeed_engine import LearnerSpec
from rlhf.trainers.hf import DeepSpeedSettings
from rlhf.utils.distributed import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from rlhf.models.loader import resolve_model_path

    return resolve_model_path("tiny", TinyModelConfig())


@pytest.fixture(scope="module")
def rollout(tiny_path) -> Rollout:
    engine = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    samples = engine.generate(["Where is my order #B55555?", "Can I get a refund?"],
                              SamplingParams(n=4, max_new_tokens=8), seed=0)
    return Rollout.from_samples(samples, engine.tokenizer.pad_token_id, n=4)


def _policy(path: str, zero_stage: int | None = None, offload_optimizer: bool = False, **overrides) -> PolicyLearner:
    settings = {"device": "cpu", "lr": 1e-3, "micro_batch_size": 8, "grad_accum_steps": 1, **overrides}
    deepspeed = DeepSpeedSettings(zero_stage=zero_stage, offload_optimizer=offload_optimizer)
    spec = LearnerSpec(model_path=path, deepspeed=deepspeed, **settings)
    learner = PolicyLearner(spec, rank=0, world_size=1, backend="gloo")
    learner.setup("127.0.0.1", free_port())
    return learner


def _batch(rollout: Rollout, learner: PolicyLearner) -> Batch:
    mask = rollout.tokens.response_mask.float()
    sign = torch.tensor([1.0, -1.0] * (len(rollout) // 2)).unsqueeze(1)
    return Batch(rollout.tokens, mask, learner.logprobs(rollout.tokens, 1.0), sign * mask)


def _step(learner: PolicyLearner, batch: Batch) -> RankStats:
    return learner.train_minibatch(batch, PolicyLossSettings(), 0.0, batch.token_count, batch.sequence_count)


def _weights(learner: PolicyLearner) -> dict[str, torch.Tensor]:
    return learner.weights()


def test_a_ppo_step_follows_the_advantages(tiny_path, rollout):
    learner = _policy(tiny_path)
    batch = _batch(rollout, learner)
    before = _weights(learner)
    stats = merge_rank_stats([_step(learner, batch)])
    after = learner.logprobs(rollout.tokens, 1.0)
    change = ((after - batch.old_logprobs) * batch.loss_mask).sum(dim=1)
    positive = batch.advantages[:, 0] > 0
    assert (change[positive] > 0).all() and (change[~positive] < 0).all()
    assert any(not torch.equal(before[k], v) for k, v in _weights(learner).items())
    assert stats["grad_norm"] > 0 and stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["policy_loss"] == pytest.approx(0.0, abs=1e-6)  # ratio 1 and zero-mean advantages per token


# With adam_eps far above every |gradient|, Adam's first step is lr * g / eps: linear in the gradient, so
# equal updates mean equal accumulated gradients (with eps=1e-8 the first step is lr * sign(g), which flips
# on gradients that are zero up to rounding).
LINEAR_ADAM = {"adam_eps": 10.0, "lr": 1.0}


def test_two_micro_batches_equal_one(tiny_path, rollout):
    whole = _policy(tiny_path, **LINEAR_ADAM)
    split = _policy(tiny_path, micro_batch_size=4, grad_accum_steps=2, **LINEAR_ADAM)
    batch = _batch(rollout, whole)
    norm_whole = _step(whole, batch).grad_norm
    norm_split = _step(split, batch).grad_norm
    assert norm_whole == pytest.approx(norm_split, rel=1e-5)
    for name, tensor in _weights(whole).items():
        assert torch.allclose(tensor, _weights(split)[name], atol=1e-7), name


def test_zero3_matches_zero0(tiny_path, rollout):
    plain = _policy(tiny_path, **LINEAR_ADAM)
    sharded = _policy(tiny_path, zero_stage=3, **LINEAR_ADAM)
    batch = _batch(rollout, plain)
    assert _step(plain, batch).grad_norm == pytest.approx(_step(sharded, batch).grad_norm, rel=1e-5)
    reference = _weights(plain)
    exported = _weights(sharded)
    assert exported.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.allclose(tensor, exported[name], atol=1e-7), name


def test_gradient_checkpointing_recomputes_without_changing_the_update(tiny_path, rollout):
    plain = _policy(tiny_path, **LINEAR_ADAM)
    recomputed = _policy(tiny_path, gradient_checkpointing=True, **LINEAR_ADAM)
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in recomputed.engine.module.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert layers and all(m.training and m.gradient_checkpointing for m in layers)
    assert not any(m.training for m in recomputed.engine.module.modules() if isinstance(m, torch.nn.Dropout))
    batch = _batch(rollout, plain)
    assert torch.allclose(recomputed.logprobs(rollout.tokens, 1.0), batch.old_logprobs, atol=1e-6)
    mlp, calls = layers[0].mlp, []
    forward = mlp.forward

    def counted(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return forward(*args, **kwargs)

    mlp.forward = counted
    assert _step(plain, batch).grad_norm == pytest.approx(_step(recomputed, batch).grad_norm, rel=1e-5)
    del mlp.forward
    assert len(calls) == 2  # the forward, and its recomputation in backward
    for name, tensor in _weights(plain).items():
        assert torch.allclose(tensor, _weights(recomputed)[name], atol=1e-6), name


def test_zero2_with_optimizer_offload_matches_zero0(tiny_path, rollout):
    plain = _policy(tiny_path, **LINEAR_ADAM)
    offloaded = _policy(tiny_path, zero_stage=2, offload_optimizer=True, **LINEAR_ADAM)
    assert offloaded.model.engine.zero_optimization_stage() == 2 and offloaded.model.engine.zero_cpu_offload()
    batch = _batch(rollout, plain)
    assert _step(plain, batch).grad_norm == pytest.approx(_step(offloaded, batch).grad_norm, rel=1e-5)
    for name, tensor in _weights(plain).items():
        assert torch.allclose(tensor, _weights(offloaded)[name], atol=1e-6), name


def test_bf16_learners_at_zero2_and_zero3_take_the_same_step(tiny_path, rollout):
    """The CUDA learner settings (bf16, ZeRO-2/3, gradient checkpointing) on the CPU: equal bf16 updates."""
    steps = {}
    for zero in (2, 3):
        learner = _policy(tiny_path, dtype="bfloat16", zero_stage=zero, gradient_checkpointing=True)
        assert learner.model.engine.bfloat16_enabled()
        batch = _batch(rollout, learner)
        before = _weights(learner)
        _step(learner, batch)
        after = _weights(learner)
        assert all(t.dtype == torch.bfloat16 for t in after.values())
        steps[zero] = {name: after[name].float() - before[name].float() for name in before}
    assert sum(d.abs().sum() for d in steps[2].values()) > 0
    for name, delta in steps[2].items():
        assert torch.equal(delta, steps[3][name]), name


def test_the_learner_reads_zero_and_offload_from_the_deepspeed_settings(tiny_path):
    from rlhf.trainers.deepspeed_engine import ds_config

    spec = LearnerSpec(model_path=tiny_path, deepspeed=DeepSpeedSettings(zero_stage=3, offload_optimizer=True,
                                                                         offload_params=True))
    zero = ds_config(spec, world_size=2)["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    plain = ds_config(LearnerSpec(model_path=tiny_path), world_size=1)["zero_optimization"]
    assert plain == {"stage": 0}  # an unset stage is ZeRO 0: a learner always runs a DeepSpeed engine


def test_importance_weights_scale_the_update(tiny_path, rollout):
    # No clipping (it would rescale both updates to the same norm), and eps large enough that Adam's first
    # step stays linear in the gradient at these gradient sizes.
    unclipped = {"max_grad_norm": 1e3, "adam_eps": 1e3, "lr": 1e3}
    plain = _policy(tiny_path, **unclipped)
    weighted = _policy(tiny_path, **unclipped)
    batch = _batch(rollout, plain)
    halves = Batch(batch.tokens, batch.loss_mask, batch.old_logprobs, batch.advantages,
                   is_weights=0.5 * batch.loss_mask)
    # With linear Adam the first update is proportional to the gradient: half the weight, half the step.
    start = _weights(plain)
    norm_plain = _step(plain, batch).grad_norm
    norm_half = _step(weighted, halves).grad_norm
    assert norm_half == pytest.approx(0.5 * norm_plain, rel=1e-5)
    for name, tensor in _weights(plain).items():
        assert torch.allclose(_weights(weighted)[name] - start[name], 0.5 * (tensor - start[name]), atol=2e-5), name


def test_checkpoint_restores_weights_and_optimizer(tiny_path, rollout, tmp_path):
    first = _policy(tiny_path)
    batch = _batch(rollout, first)
    _step(first, batch)
    first.save_checkpoint(str(tmp_path / "policy"), {"step": 1})
    _step(first, batch)
    resumed = _policy(tiny_path)
    client = resumed.load_checkpoint(str(tmp_path / "policy"))
    assert client["step"] == 1
    _step(resumed, batch)  # the second Adam step only matches with the first step's moments restored
    for name, tensor in _weights(first).items():
        assert torch.equal(tensor, _weights(resumed)[name]), name


def test_critic_starts_at_zero_and_fits_returns(tiny_path, rollout):
    spec = LearnerSpec(model_path=tiny_path, device="cpu", lr=1e-2, micro_batch_size=8)
    critic = CriticLearner(spec, rank=0, world_size=1, backend="gloo")
    critic.setup("127.0.0.1", free_port(), fresh_head=True)
    values = critic.values(rollout.tokens)
    assert values.abs().max() == 0
    mask = rollout.tokens.response_mask.float()
    batch = Batch(rollout.tokens, mask, torch.zeros_like(mask), torch.zeros_like(mask), old_values=values,
                  returns=mask.clone())
    errors = []
    for _ in range(5):
        stats = critic.train_minibatch(batch, None, "token_mean", batch.token_count, batch.sequence_count)
        errors.append(merge_rank_stats([stats])["value_error"])
    assert errors[0] == pytest.approx(1.0) and errors[-1] < 0.5 * errors[0]


def test_lora_learner_exports_merged_weights(tiny_path, rollout):
    learner = _policy(tiny_path, lora=LoraSettings(enabled=True, r=4, alpha=8), lr=5e-2)
    batch = _batch(rollout, learner)
    _step(learner, batch)
    engine = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    prompts, responses = rollout.tokens.lists()
    assert check_probe(engine.logprobs(prompts, responses), engine.logprobs(prompts, responses), 1e-6, 0, 0) == 0
    assert engine.load_weights(learner.weights()) == len(learner.weight_manifest())
    assert all(".lora_" not in spec.name and "base_layer" not in spec.name for spec in learner.weight_manifest())
    assert check_probe(engine.logprobs(prompts, responses), learner.probe_logprobs(prompts, responses, 1.0),
                       1e-4, 0, 1) < 1e-4


def test_lora_factor_sync_merges_into_the_engine_step_after_step(tiny_path, rollout):
    learner = _policy(tiny_path, lora=LoraSettings(enabled=True, r=4, alpha=8), lr=5e-2)
    assert learner.sync_lora_only()
    manifest = learner.weight_manifest()
    assert manifest and all(spec.name.endswith(("@lora_A", "@lora_B")) for spec in manifest)
    engine = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    prompts, responses = rollout.tokens.lists()
    for step in (1, 2):  # the second sync must replace the first delta, not add to it
        _step(learner, _batch(rollout, learner))
        payload = learner.sync_payload()
        assert engine.load_weights(payload) == len(manifest)
        assert check_probe(engine.logprobs(prompts, responses), learner.probe_logprobs(prompts, responses, 1.0),
                           1e-4, 0, step) < 1e-4
    sent = sum(t.numel() for t in payload.values())
    assert sent < 0.2 * sum(t.numel() for t in learner.weights().values())


def test_probe_check_catches_a_skipped_sync(tiny_path, rollout):
    learner = _policy(tiny_path)
    engine = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    prompts, responses = rollout.tokens.lists()
    check_probe(engine.logprobs(prompts, responses), learner.probe_logprobs(prompts, responses, 1.0), 1e-4, 0, 0)
    _step(learner, _batch(rollout, learner))
    with pytest.raises(WeightSyncError, match="rollout worker 0 scores the probe batch"):
        check_probe(engine.logprobs(prompts, responses), learner.probe_logprobs(prompts, responses, 1.0), 1e-4, 0, 1)
    engine.load_weights(learner.weights())
    check_probe(engine.logprobs(prompts, responses), learner.probe_logprobs(prompts, responses, 1.0), 1e-4, 0, 1)


def test_rank_stats_merge_by_tokens():
    a = RankStats(losses={"policy_loss": 0.25}, weighted={"clip_fraction": 0.5 * 10}, tokens=10, grad_norm=2.0)
    b = RankStats(losses={"policy_loss": 0.5}, weighted={"clip_fraction": 0.0 * 30}, tokens=30, grad_norm=2.0)
    assert merge_rank_stats([a, b]) == {"policy_loss": 0.75, "clip_fraction": 0.125, "grad_norm": 2.0}
    # a step's mini-batches are averaged per statistic (the critic trains in warm-up steps, the policy may not)
    assert mean_stats([{"loss": 1.0, "lr": 2.0}, {"loss": 3.0}], "train/") == {"train/loss": 2.0, "train/lr": 2.0}


def test_reference_log_probs_given_apart_from_the_batch_train_alike(tiny_path, rollout):
    """With the KL in the loss, the learner takes a shard's reference log-probs as an argument (they arrive
    apart from the batch when the reference passes go mini-batch by mini-batch) and trains as from the batch."""
    from dataclasses import replace

    settings = PolicyLossSettings(kl_in_loss=True, kl_estimator="k3")
    together, apart = _policy(tiny_path), _policy(tiny_path)
    batch = _batch(rollout, together)
    reference = batch.old_logprobs - 0.3 * batch.loss_mask
    counts = (batch.token_count, batch.sequence_count)
    expected = merge_rank_stats([together.train_minibatch(replace(batch, ref_logprobs=reference), settings, 0.5,
                                                          *counts)])
    got = merge_rank_stats([apart.train_minibatch(batch, settings, 0.5, *counts, ref_logprobs=reference)])
    assert expected["kl_loss"] > 0 and got == pytest.approx(expected)
    assert all(torch.equal(v, _weights(apart)[k]) for k, v in _weights(together).items())
