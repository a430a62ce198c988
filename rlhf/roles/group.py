"""The PPO roles as one group on Ray: typed specs in, started actors out, and the calls the controller makes
on several actors at once. The controller loop itself is ``rlhf/stages/ppo.py``; nothing here decides
anything about the algorithm.

* :class:`RoleSpecs`: every role's frozen spec (the stage builds it from its config, in one place).
* :func:`start_roles`: one placement group (:mod:`rlhf.roles.launcher`), every actor in its bundle, the
  learners set up, every actor's heap frozen (:mod:`rlhf.utils.heap`); :func:`placement` says which node each
  actor landed on.
* :func:`generate`: a prompt list split over the rollout workers, replies back in prompt order;
  :func:`start_generation` does the same without waiting (:class:`PendingRollout`), so the controller can
  train on one batch while the workers sample the next.
* :func:`train_minibatch`: one optimizer step of the policy (and critic) on a mini-batch split over the ranks;
  :func:`start_reference` sends the reference passes that its updates wait for shard by shard.
* :func:`sync_rollout`: the policy's weights into the rollout workers, waking sleeping vLLM engines around it.
* :func:`save_checkpoint`, :func:`load_checkpoint`: the learners' and the controller's state (:mod:`.checkpoint`).
* :func:`busy_seconds`: what every actor spent computing since the last call (:mod:`.busy`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhf.rl.losses import PolicyLossSettings
from rlhf.roles import checkpoint as ckpt
from rlhf.roles.busy import merge_busy
from rlhf.roles.inference import (
    ReferenceActor,
    ReferenceSpec,
    RewardActor,
    RewardSpec,
    RolloutSpec,
    RolloutWorker,
    reward_model_dir,
)
from rlhf.roles.launcher import ROLES, ResourcesConfig, Roles, plan_bundles, start_actor, start_placement_group
from rlhf.roles.learner import CriticLearner, PolicyLearner, merge_rank_stats
from rlhf.roles.weight_sync import sync_weights
from rlhf.rollout.containers import Batch, TokenBatch
from rlhf.rollout.types import RolloutSample, SamplingParams
from rlhf.rollout.weight_transfer import TensorSpec
from rlhf.trainers.deepspeed_engine import LearnerSpec

__all__ = ["PendingRollout", "ReferenceShards", "RoleSpecs", "busy_seconds", "critic_source", "generate",
           "load_checkpoint", "placement", "rows", "save_checkpoint", "split", "start_generation", "start_reference",
           "start_roles", "sync_rollout", "train_minibatch"]


@dataclass(frozen=True)
class RoleSpecs:
    """What every role of a run builds; ``critic`` is None without GAE."""

    rollout: RolloutSpec
    reference: ReferenceSpec
    reward: RewardSpec
    policy: LearnerSpec
    critic: LearnerSpec | None = None
    critic_fresh_head: bool = False  # the critic starts from the policy's backbone with a zero value head


def critic_source(init_from: str, reward_model: str | None, policy_path: str) -> tuple[str, bool]:
    """(model path, fresh value head?) of the critic's initial weights: the reward model (same vocabulary as
    the policy required) unless ``init_from`` is ``policy`` or there is no reward model."""
    from rlhf.models.loader import load_tokenizer
    from rlhf.trainers.modeling import check_same_vocabulary

    if init_from == "policy" or reward_model is None:
        return policy_path, True
    folder = str(reward_model_dir(reward_model))
    check_same_vocabulary(load_tokenizer(policy_path), load_tokenizer(folder), "critic.init_from=reward")
    return folder, False


def start_roles(specs: RoleSpecs, resources: ResourcesConfig, backend: str) -> Roles:
    """Place and start every role, then set up the learners' process groups (``backend``: gloo or nccl) and
    freeze every actor's heap."""
    import ray

    from rlhf.core.cluster import worker_env

    names = tuple(r for r in ROLES if r != "critic" or specs.critic is not None)
    bundles, where = plan_bundles(resources, names)
    roles = Roles(group=start_placement_group(bundles, resources.strategy, resources.ready_timeout_s))
    env, ranks = worker_env(), resources.learner_workers

    def start(cls: type, role: str, index: int, *args: Any):
        return start_actor(cls, roles.group, where[role][index], getattr(resources, role), env, *args)

    try:
        roles.policy = [start(PolicyLearner, "policy", r, specs.policy, r, ranks, backend) for r in range(ranks)]
        roles.rollout = [start(RolloutWorker, "rollout", i, specs.rollout) for i in range(resources.rollout_workers)]
        roles.reference = start(ReferenceActor, "reference", 0, specs.reference)
        roles.reward = start(RewardActor, "reward", 0, specs.reward)
        address = ray.get(roles.policy[0].address.remote())
        setups = [p.setup.remote(*address) for p in roles.policy]
        if specs.critic is not None:
            roles.critic = [start(CriticLearner, "critic", r, specs.critic, r, ranks, backend) for r in range(ranks)]
            critic_address = ray.get(roles.critic[0].address.remote())
            setups += [c.setup.remote(*critic_address, specs.critic_fresh_head) for c in roles.critic]
        ray.get(setups + [a.node_id.remote() for a in roles.all()])
        ray.get([a.freeze_heap.remote() for a in roles.all()])
    except BaseException:
        roles.shutdown()
        raise
    return roles


def placement(roles: Roles) -> dict[str, list[str]]:
    """The Ray node of every actor, per role (written to ``placement.json``)."""
    import ray

    groups = {"rollout": roles.rollout, "policy": roles.policy, "critic": roles.critic,
              "reference": [roles.reference], "reward": [roles.reward]}
    return {name: ray.get([a.node_id.remote() for a in actors]) for name, actors in groups.items() if actors}


def split(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal parts (order kept; the first ``len % parts`` parts are one longer)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def rows(count: int, parts: int) -> list[torch.Tensor]:
    """Row indices ``[0, count)`` in contiguous chunks, one per learner rank."""
    return list(torch.arange(count).chunk(parts))


@dataclass(frozen=True)
class PendingRollout:
    """Generation under way on the rollout workers: the samples' and the weight versions' object refs."""

    samples: list[Any]
    versions: list[Any]

    def result(self) -> tuple[list[RolloutSample], int]:
        """The samples in prompt order, and the oldest policy step whose weights generated them."""
        import ray

        parts = ray.get(self.samples)
        return [sample for part in parts for sample in part], min(ray.get(self.versions))


def start_generation(workers: list, prompts: list[str], params: SamplingParams, seeds: list[int]) -> PendingRollout:
    """Start sampling ``params.n`` replies per prompt, the prompts split over ``workers`` (worker ``i`` with
    seed ``seeds[i]``), and return at once. Each worker is asked its weight version right behind its
    ``generate``: Ray runs an actor's calls in order, so the answer is the version that generated."""
    shards = split(prompts, len(workers))
    work = [(w, shard, seed) for w, shard, seed in zip(workers, shards, seeds) if shard]
    return PendingRollout([w.generate.remote(shard, params, seed) for w, shard, seed in work],
                          [w.weights_version.remote() for w, _, _ in work])


def generate(workers: list, prompts: list[str], params: SamplingParams, seeds: list[int]) -> list[RolloutSample]:
    """Sample ``params.n`` replies per prompt over ``workers`` and wait for them (:func:`start_generation`)."""
    return start_generation(workers, prompts, params, seeds).result()[0]


@dataclass(frozen=True)
class ReferenceShards:
    """Reference log-probs under way, one pass per learner shard of each of a step's first-epoch mini-batches,
    sent in training order: the update of a mini-batch waits for its own shards only, and the reference
    actor works on the next ones meanwhile (:func:`start_reference`)."""

    minibatches: list[torch.Tensor]  # row indices of each mini-batch, in training order
    shards: list[list[Any]]  # per mini-batch, the object ref of each learner shard's ``[b, T]`` log-probs

    def gather(self, size: int, width: int) -> torch.Tensor:
        """The whole batch's ``[size, width]`` reference log-probs, in batch order."""
        import ray

        out = torch.zeros((size, width), dtype=torch.float32)
        for minibatch, refs in zip(self.minibatches, self.shards):
            for part, logprobs in zip(rows(len(minibatch), len(refs)), ray.get(refs)):
                out[minibatch[part]] = logprobs
        return out


def start_reference(roles: Roles, tokens: TokenBatch, minibatches: list[torch.Tensor],
                    temperature: float) -> ReferenceShards:
    """Send the reference passes of ``minibatches`` (row indices into ``tokens``), each split as
    :func:`train_minibatch` splits it over the learner ranks, without waiting."""
    ranks = len(roles.policy)
    return ReferenceShards(minibatches, [
        [roles.reference.logprobs.remote(tokens.select(minibatch[part]), temperature)
         for part in rows(len(minibatch), ranks)] for minibatch in minibatches])


def train_minibatch(roles: Roles, mini: Batch, loss: PolicyLossSettings, kl_coef: float, value_clip: float | None,
                    train_policy: bool = True, logprob_gap: bool = False, reference: list | None = None
                    ) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """One optimizer step of the policy (unless ``train_policy`` is off) and of the critic (when there is
    one) on ``mini``, split evenly over the ranks; returns each one's merged statistics (None if it did
    not train), the policy's with ``logprob_gap`` when asked (:meth:`PolicyLearner.train_minibatch`).
    ``reference``: each rank shard's reference log-probs as object refs (:class:`ReferenceShards`), in place
    of ``mini.ref_logprobs``; a rank runs its first forward pass while its shard's reference pass may still
    be running, and waits for it before the loss. Every shard's loss is normalised by the WHOLE mini-batch's
    token and sequence counts."""
    import ray

    shards = [mini.select(r) for r in rows(len(mini), len(roles.policy))]
    counts = (mini.token_count, mini.sequence_count)
    references = [[ref] for ref in reference] if reference else [None] * len(shards)  # in a list: unresolved
    policy_refs = [p.train_minibatch.remote(s, loss, kl_coef, *counts, logprob_gap, ref)
                   for p, s, ref in zip(roles.policy, shards, references)] if train_policy else []
    critic_refs = [c.train_minibatch.remote(s, value_clip, loss.aggregation, *counts)
                   for c, s in zip(roles.critic, shards)]
    policy = merge_rank_stats(ray.get(policy_refs)) if policy_refs else None
    critic = merge_rank_stats(ray.get(critic_refs)) if critic_refs else None
    return policy, critic


def sync_rollout(roles: Roles, method: str, manifest: list[TensorSpec], sleeping: bool, version: int) -> None:
    """Copy the policy (its weights after step ``version``) into the rollout workers; sleeping vLLM engines
    wake their weights first and their KV cache after (so the learner's memory is free until the weights
    arrive)."""
    import ray

    if sleeping:
        ray.get([w.wake_up.remote(["weights"]) for w in roles.rollout])
    sync_weights(roles.policy, roles.rollout, method, manifest, version)
    if sleeping:
        ray.get([w.wake_up.remote(["kv_cache"]) for w in roles.rollout])


def busy_seconds(roles: Roles) -> dict[str, float]:
    """``timing/compute/<name>``: the seconds each kind of work took on the actors since the last call."""
    import ray

    return merge_busy(ray.get([actor.busy_seconds.remote() for actor in roles.all()]))


def save_checkpoint(run_dir: Path, roles: Roles, state: ckpt.ControllerState, keep: int) -> None:
    """``checkpoints/step-<N>/``: every learner rank's DeepSpeed checkpoint and the controller state, the
    ``COMPLETE`` marker last; then all but the ``keep`` newest complete checkpoints are removed."""
    import ray

    folder = ckpt.checkpoint_folder(run_dir, state.step)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    saves = [p.save_checkpoint.remote(str(folder / "policy"), {"step": state.step}) for p in roles.policy]
    saves += [c.save_checkpoint.remote(str(folder / "critic"), {"step": state.step}) for c in roles.critic]
    ray.get(saves)
    ckpt.save_controller_state(folder, state)
    ckpt.mark_complete(folder)
    ckpt.prune_checkpoints(run_dir, keep)


def load_checkpoint(roles: Roles, folder: Path) -> ckpt.ControllerState:
    """Restore every learner rank from checkpoint ``folder``; returns the controller state saved with it."""
    import ray

    loads = [p.load_checkpoint.remote(str(folder / "policy")) for p in roles.policy]
    loads += [c.load_checkpoint.remote(str(folder / "critic")) for c in roles.critic]
    ray.get(loads)
    return ckpt.load_controller_state(folder)
