"""``rlhf train ppo``: PPO and the critic-free GRPO, RLOO and REINFORCE++ under Ray, in one controller loop.

Roles (Ray actors placed by ``resources``; see :mod:`rlhf.roles.launcher`): rollout workers (a
:class:`~rlhf.rollout.types.RolloutEngine` each), the policy learner and, for GAE, the critic learner
(DeepSpeed engines, ZeRO 0-3, torch AdamW, optional LoRA), the frozen reference policy and the reward
(a reward model from an RM stage folder, normalised with its stored mean/std, or a ``module:function``).

One step, top to bottom in :func:`_train`:

1. take the next ``rollout.prompts_per_step`` prompts and sample ``rollout.n`` replies to each;
2. score them (reward, normalised then clipped), with the reference and behaviour log-probs (recomputed by
   the policy learner, so engine differences never enter the ratio) and, for GAE, the critic's values;
3. truncation (penalty or masking of replies cut by ``max_new_tokens``), per-token KL to the reference,
   advantages by ``algorithm.advantage`` (gae | grpo | rloo | reinforce_pp), all on the whole batch;
4. ``algorithm.epochs`` passes of shuffled mini-batches, each one optimizer step of the policy (and critic);
5. update the KL coefficient, sync the policy weights to the rollout workers and check the sync on a
   probe batch (:mod:`rlhf.roles.weight_sync`), log, checkpoint every ``train.save_steps`` steps.

Every ``eval.every`` steps and at the end the policy answers held-out prompts once each, and the gold
rubric scores them against the starting policy's replies (``eval/win_rate``, ties count half).
Metric names are listed in ``docs/metrics.md``; the method and its options in ``docs/ppo.md``.

Outputs (``runs/ppo/<name>-<fingerprint>/``): ``model/``, ``metrics.jsonl`` + ``tensorboard/``,
``metrics.json``, ``eval_baseline.jsonl`` and ``samples.jsonl`` (held-out replies, start and end),
``placement.json`` (the Ray node of every actor), ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from rlhf.core.artifacts import StageRun, atomic_write_json, atomic_write_text
from rlhf.core.config import RunConfig, StrictModel
from rlhf.core.errors import UserError
from rlhf.models.config import ModelConfig
from rlhf.rl import AggregationMode, KLKind, TruncationMode
from rlhf.roles.checkpoint import ControllerState, DataPosition
from rlhf.roles.launcher import ResourcesConfig
from rlhf.roles.weight_sync import check_sync, connect_sync_group, sync_weights
from rlhf.rollout.vllm_engine import VLLMSettings, check_vllm_temperature

__all__ = ["PPOConfig", "compute_advantages", "normalise_rewards", "run_ppo"]

Advantage = Literal["gae", "grpo", "rloo", "reinforce_pp"]


class RewardConfig(StrictModel):
    """Where rewards come from and how they are shaped."""

    model: str | None = Field(None, description="reward model: an RM stage folder (its model/) or a model folder")
    function: str | None = Field(None, description="reward function module:function called as f(prompt, reply)")
    normalize: bool = Field(True, description="normalise reward-model scores with model/reward_stats.json "
                            "(a reward function's scores are used as returned)")
    clip: float | None = Field(10.0, gt=0, description="clip rewards (after normalisation) to +-clip; null: off")
    batch_size: int = Field(32, ge=1, description="reward-model batch size")

    @model_validator(mode="after")
    def _one_source(self) -> RewardConfig:
        if (self.model is None) == (self.function is None):
            raise ValueError("set exactly one of reward.model (RM stage folder) and reward.function (module:function)")
        if self.function is not None and "normalize" in self.model_fields_set and self.normalize:
            raise ValueError("reward.normalize uses a reward model's stored statistics; remove it with reward.function")
        return self


class CriticConfig(StrictModel):
    """The value function of GAE (only with algorithm.advantage=gae)."""

    init_from: Literal["auto", "reward", "policy"] = Field(
        "auto", description="initial weights: the reward model, or the policy with a fresh value head "
        "(auto: the reward model when one is given)")
    lr: float = Field(5e-5, gt=0, description="critic learning rate")
    value_clip: float | None = Field(0.2, gt=0, description="clip value updates to +-value_clip around rollout values")
    warmup_steps: int = Field(0, ge=0, description="first steps that train only the critic")


class KLConfig(StrictModel):
    """The KL penalty to the reference policy."""

    placement: Literal["reward", "loss"] = Field("reward", description="in the token rewards (PPO) or the loss (GRPO)")
    estimator: KLKind = Field("k1", description="per-token estimator k1, k2 or k3")
    coef: float = Field(0.05, ge=0, description="KL coefficient beta (starting value when adaptive)")
    adaptive: bool = Field(False, description="adapt beta towards kl.target (Ziegler et al. 2019)")
    target: float = Field(6.0, gt=0, description="adaptive target KL (nats per sequence)")
    horizon: int = Field(10000, gt=0, description="adaptive horizon (samples)")


class AlgorithmConfig(StrictModel):
    """Advantage estimator and policy-loss settings."""

    advantage: Advantage = Field("gae", description="gae (PPO with a critic), grpo, rloo or reinforce_pp")
    gamma: float = Field(1.0, ge=0, le=1, description="discount (GAE, REINFORCE++)")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    whiten_advantages: bool = Field(True, description="whiten GAE advantages over the whole batch")
    grpo_std_normalise: bool = Field(True, description="divide GRPO advantages by the group std (false: Dr. GRPO)")
    epochs: int = Field(1, ge=1, description="PPO epochs over each rollout batch")
    mini_batch_size: int = Field(16, ge=1, description="samples per optimizer step")
    clip_low: float = Field(0.2, ge=0, lt=1, description="ratio clip below 1")
    clip_high: float = Field(0.2, ge=0, description="ratio clip above 1 (> clip_low: clip-higher)")
    dual_clip: float | None = Field(None, gt=1, description="dual-clip bound c for negative advantages; null: off")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    aggregation: AggregationMode = Field("token_mean", description="loss aggregation over the mini-batch")
    truncation: TruncationMode = Field("none", description="replies cut by max_new_tokens: none, penalty or mask")
    truncation_penalty: float = Field(0.0, ge=0, description="subtracted from truncated replies' rewards (penalty)")
    rollout_correction: Literal["none", "tis"] = Field(
        "none", description="tis: weight each token's loss by min(pi_learner / pi_rollout, tis_cap), correcting "
        "for a rollout engine whose numerics differ from the learner's (vLLM); none: no correction")
    tis_cap: float = Field(2.0, ge=1, description="truncation cap of the importance weights (rollout_correction=tis)")
    kl: KLConfig = Field(default_factory=KLConfig)


class RolloutConfig(StrictModel):
    """Sampling of the rollout batch."""

    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="rollout engine: transformers (CPU or GPU) or vllm (CUDA only, the vllm extra)")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="vLLM engine settings (engine=vllm)")
    prompts_per_step: int = Field(16, ge=1, description="prompts per step")
    n: int = Field(1, ge=1, description="replies per prompt (>= 2 for grpo and rloo)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    top_k: int = Field(0, ge=0, description="top-k sampling (0: off)")
    max_new_tokens: int = Field(64, ge=1, description="longest reply")
    stop: list[str] = Field(default_factory=list, description="stop strings")
    batch_size: int = Field(64, ge=1, description="generation batch per worker")


class LearnerConfig(StrictModel):
    """Policy optimizer and DeepSpeed settings (the critic shares all but the learning rate)."""

    lr: float = Field(1e-5, gt=0, description="policy learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    micro_batch_size: int = Field(8, ge=1, description="samples per forward/backward on one rank")
    zero_stage: Literal[0, 1, 2, 3] = Field(0, description="DeepSpeed ZeRO stage")
    offload_optimizer: bool = Field(False, description="keep optimizer states in CPU memory (ZeRO 2/3)")
    offload_params: bool = Field(False, description="keep parameters in CPU memory between uses (ZeRO 3)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")

    @model_validator(mode="after")
    def _offload(self) -> LearnerConfig:
        if self.offload_optimizer and self.zero_stage < 2:
            raise ValueError(f"learner.offload_optimizer needs learner.zero_stage 2 or 3, got {self.zero_stage}")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"learner.offload_params needs learner.zero_stage=3, got {self.zero_stage}")
        return self


class SyncConfig(StrictModel):
    """Weight sync to the rollout workers and its probe check."""

    method: Literal["auto", "broadcast", "object_store"] = Field(
        "auto", description="torch.distributed broadcast, the Ray object store, or broadcast with fallback")
    timeout_s: float = Field(120.0, gt=0, description="sync group set-up and broadcast timeout")
    probe_size: int = Field(4, ge=1, description="samples in the probe batch")
    probe_tolerance: float = Field(1e-3, gt=0, description="largest allowed log-prob difference (nats) after sync")


class PPODataConfig(StrictModel):
    """Training prompts."""

    path: str | None = Field(None, description="prompt file (jsonl/csv/parquet) or a prepare stage folder; "
                             "omit for demo-world prompts")
    demo_prompts: int = Field(2048, ge=1, description="demo-world prompts when no path is given")


class PPOTrainConfig(StrictModel):
    """Length of the run and checkpoints."""

    steps: int = Field(100, ge=1, description="PPO steps (one rollout batch each)")
    save_steps: int = Field(20, ge=1, description="checkpoint every N steps (the resume point)")
    keep_checkpoints: int = Field(2, ge=1, description="complete checkpoints kept while training")
    progress: bool = Field(True, description="show a progress bar")


class PPOEvalConfig(StrictModel):
    """Held-out win rate against the starting policy."""

    prompts: int = Field(128, ge=0, description="held-out prompts (0: no evaluation)")
    path: str | None = Field(None, description="held-out prompt file or prepare stage folder; omit for demo prompts")
    every: int = Field(0, ge=0, description="evaluate every N steps (0: only at the end)")
    rubric: str = Field("rlhf.world.demo:gold_rubric", description="module:function judging (prompt, reply)")
    temperature: float | None = Field(None, ge=0, description="sampling temperature (null: rollout.temperature)")


class PPOConfig(StrictModel):
    """Policy optimisation with PPO, GRPO, RLOO or REINFORCE++ under Ray."""

    stage: Literal["ppo"] = "ppo"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig, description="the starting policy (an SFT folder)")
    reward: RewardConfig = Field(default_factory=lambda: RewardConfig(function="rlhf.world.demo:gold_rubric"))
    critic: CriticConfig = Field(default_factory=CriticConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: PPODataConfig = Field(default_factory=PPODataConfig)
    train: PPOTrainConfig = Field(default_factory=PPOTrainConfig)
    eval: PPOEvalConfig = Field(default_factory=PPOEvalConfig)

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        algo, rollout = self.algorithm, self.rollout
        if algo.advantage != "gae" and "critic" in self.model_fields_set:
            raise ValueError(f"critic.* only applies to algorithm.advantage=gae, not {algo.advantage}; remove it")
        if algo.advantage in ("grpo", "rloo") and rollout.n < 2:
            raise ValueError(f"algorithm.advantage={algo.advantage} needs rollout.n >= 2 replies per prompt")
        batch = rollout.prompts_per_step * rollout.n
        if batch % algo.mini_batch_size:
            raise ValueError(f"rollout.prompts_per_step * rollout.n ({batch}) must be a multiple of "
                             f"algorithm.mini_batch_size ({algo.mini_batch_size})")
        per_step = self.resources.learner_workers * self.learner.micro_batch_size
        if algo.mini_batch_size % per_step:
            raise ValueError(f"algorithm.mini_batch_size ({algo.mini_batch_size}) must be a multiple of "
                             f"resources.learner_workers * learner.micro_batch_size ({per_step})")
        if self.model.lora.enabled and self.learner.zero_stage == 3:
            raise ValueError("model.lora with learner.zero_stage=3 is not supported; use zero_stage 0-2 with LoRA")
        if self.critic.init_from == "reward" and self.reward.model is None:
            raise ValueError("critic.init_from=reward needs reward.model; use critic.init_from=policy")
        if algo.truncation == "penalty" and algo.truncation_penalty == 0:
            raise ValueError("algorithm.truncation=penalty needs algorithm.truncation_penalty > 0")
        if "tis_cap" in algo.model_fields_set and algo.rollout_correction != "tis":
            raise ValueError("algorithm.tis_cap applies to algorithm.rollout_correction=tis; set that or remove "
                             "algorithm.tis_cap")
        self._check_vllm()
        return self

    def _check_vllm(self) -> None:
        rollout, res = self.rollout, self.resources
        if rollout.engine != "vllm":
            if "vllm" in rollout.model_fields_set:
                raise ValueError(f"rollout.vllm is set but rollout.engine is '{rollout.engine}'; "
                                 "set rollout.engine=vllm or remove rollout.vllm")
            return
        tp, gpus = rollout.vllm.tensor_parallel_size, res.rollout.num_gpus
        if gpus <= 0:
            raise ValueError("rollout.engine=vllm needs resources.rollout.num_gpus > 0 (vLLM runs on CUDA GPUs only); "
                             "on CPU use rollout.engine=transformers")
        if tp > 1 and gpus != tp:
            raise ValueError(f"rollout.vllm.tensor_parallel_size={tp} needs resources.rollout.num_gpus={tp} "
                             f"(one whole GPU per tensor-parallel rank), got {gpus:g}")
        if tp == 1 and gpus > 1:
            raise ValueError(f"resources.rollout.num_gpus={gpus:g} but one engine with tensor_parallel_size=1 uses "
                             "one GPU; set num_gpus to 1 (or a fraction to share it) or raise tensor_parallel_size")
        check_vllm_temperature(rollout.temperature, "rollout.temperature")
        check_vllm_temperature(self.eval.temperature, "eval.temperature")
        if self.rollout_shares_gpu and "gpu_memory_utilization" not in rollout.vllm.model_fields_set:
            raise ValueError("the rollout shares its GPU with the policy learner: set rollout.vllm.gpu_memory_utilization "
                             "to vLLM's share of that GPU (e.g. 0.3; the default 0.85 assumes a GPU of its own)")
        if rollout.vllm.sleep == "on" and not self.rollout_shares_gpu:
            raise ValueError("rollout.vllm.sleep=on frees the GPU for a learner on the same GPU, but the rollout "
                             "role is not colocated with the policy; add [rollout, policy] to resources.colocate "
                             "or set rollout.vllm.sleep=auto")

    @property
    def rollout_sleeps(self) -> bool:
        """The vLLM engines free their GPU memory between generations (rollout.vllm.sleep)."""
        sleep = self.rollout.vllm.sleep
        return self.rollout.engine == "vllm" and (sleep == "on" or (sleep == "auto" and self.rollout_shares_gpu))

    @property
    def rollout_shares_gpu(self) -> bool:
        """The rollout workers share GPUs with the policy learner (listed together in resources.colocate)."""
        return any("rollout" in group and "policy" in group for group in self.resources.colocate)

    @property
    def uses_critic(self) -> bool:
        return self.algorithm.advantage == "gae"


# ---------------------------------------------------------------- ALGO LOGIC: rewards and advantages


def normalise_rewards(raw: torch.Tensor, mean: float | None, std: float | None, clip: float | None) -> torch.Tensor:
    """``clip((raw - mean) / std, -clip, clip)``; without stored statistics only the clip applies. ``[B]``."""
    rewards = raw.to(torch.float32)
    if mean is not None and std is not None:
        rewards = (rewards - mean) / std
    return rewards.clamp(-clip, clip) if clip is not None else rewards


def compute_advantages(advantage: Advantage, scores: torch.Tensor, kl: torch.Tensor, kl_coef: float,
                       kl_in_reward: bool, mask: torch.Tensor, loss_mask: torch.Tensor, group_size: int,
                       values: torch.Tensor | None = None, gamma: float = 1.0, lam: float = 0.95,
                       whiten: bool = True, std_normalise: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token advantages ``[B, T]`` and, for GAE, critic returns ``[B, T]`` (else None).

    ``scores`` ``[B]`` (shaped rewards), ``kl`` ``[B, T]`` (per-token estimate, zero on padding), ``mask``
    the response mask, ``loss_mask`` the mask after truncation handling (used for whitening). With the KL in
    the reward, GAE and REINFORCE++ get ``-kl_coef * kl_t`` on every token; GRPO and RLOO (sequence-level)
    get ``score - kl_coef * sum_t kl_t``.
    """
    from rlhf.rl import (
        compute_token_rewards,
        gae,
        grpo_advantages,
        masked_whiten,
        reinforce_pp_advantages,
        rloo_advantages,
    )

    beta = kl_coef if kl_in_reward else 0.0
    if advantage == "gae":
        if values is None:
            raise ValueError("GAE needs the critic's values")
        adv, returns = gae(compute_token_rewards(scores, kl, beta, mask), values, mask, gamma, lam)
        if whiten and loss_mask.sum() >= 2:
            adv = masked_whiten(adv, loss_mask)
        return adv, returns
    if advantage == "reinforce_pp":
        adv, _ = reinforce_pp_advantages(compute_token_rewards(scores, kl, beta, mask), mask, gamma)
        return adv, None
    sequence_scores = scores - beta * (kl * mask).sum(dim=1)
    if advantage == "grpo":
        return grpo_advantages(sequence_scores, mask, group_size=group_size, std_normalise=std_normalise), None
    if advantage == "rloo":
        return rloo_advantages(sequence_scores, mask, group_size=group_size), None
    raise ValueError(f"unknown advantage estimator {advantage!r}; use gae, grpo, rloo or reinforce_pp")


# ---------------------------------------------------------------- plumbing: data, seeds, roles


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (run seed, step, worker...), stable across processes."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


class PromptStream:
    """Prompts in a seeded shuffled order per epoch; ``position`` says where the stream stands."""

    def __init__(self, prompts: list[str], seed: int, position: DataPosition | None = None) -> None:
        if not prompts:
            raise UserError("the training prompt set is empty; check data.path")
        self.prompts = prompts
        self.seed = seed
        self.position = position or DataPosition()
        self._order = self._shuffled(self.position.epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(derive_seed(self.seed, "epoch", epoch)).shuffle(order)
        return order

    def take(self, count: int) -> list[str]:
        out = []
        while len(out) < count:
            if self.position.offset >= len(self._order):
                self.position = DataPosition(self.position.epoch + 1, 0)
                self._order = self._shuffled(self.position.epoch)
            out.append(self.prompts[self._order[self.position.offset]])
            self.position = DataPosition(self.position.epoch, self.position.offset + 1)
        return out


def _prompt_file(path: str, split: str) -> Path:
    folder = Path(path)
    candidate = folder / "prompts" / f"{split}.jsonl"
    return candidate if folder.is_dir() and candidate.is_file() else folder


def _load_prompts(cfg: PPOConfig) -> tuple[list[str], list[str]]:
    """Training prompts and held-out evaluation prompts (demo prompts never overlap the training set)."""
    from rlhf.data.prompts import load_prompt_records
    from rlhf.world.demo import generate_prompts

    if cfg.data.path:
        train = [r.prompt for r in load_prompt_records(_prompt_file(cfg.data.path, "train"))]
    else:
        train = [p.text for p in generate_prompts(cfg.data.demo_prompts, seed=cfg.run.seed + 30_000)]
    if cfg.eval.prompts == 0:
        return train, []
    if cfg.eval.path:
        held = [r.prompt for r in load_prompt_records(_prompt_file(cfg.eval.path, "eval"))]
    else:
        seen = set(train)
        held = [p.text for p in generate_prompts(cfg.eval.prompts * 2, seed=cfg.run.seed + 20_000)
                if p.text not in seen]
    return train, held[:cfg.eval.prompts]


def _inputs(cfg: PPOConfig, policy_path: str) -> dict[str, str | Path]:
    from rlhf.roles.inference import reward_model_dir

    inputs: dict[str, str | Path] = {"policy": policy_path}
    if cfg.reward.model:
        inputs["reward_model"] = reward_model_dir(cfg.reward.model)
    if cfg.data.path:
        inputs["prompts"] = _prompt_file(cfg.data.path, "train")
    if cfg.eval.path:
        inputs["eval_prompts"] = _prompt_file(cfg.eval.path, "eval")
    return inputs


def run_ppo(cfg: PPOConfig) -> Path:
    """Run (or skip, when already complete) the PPO stage; returns the stage folder."""
    from rlhf.models.loader import resolve_model_path

    if cfg.rollout.engine == "vllm" and not (cfg.resources.address or os.environ.get("RAY_ADDRESS")):
        from rlhf.rollout.vllm_engine import require_vllm

        require_vllm()  # a local Ray runs the engines on this machine: fail now, not after placement times out

    policy_path = resolve_model_path(cfg.model.name_or_path, cfg.model.tiny)
    if not Path(policy_path).exists():
        raise UserError(f"model.name_or_path '{cfg.model.name_or_path}' is not a local folder; point it at an SFT "
                        "run folder (runs/sft/<name>-<fingerprint>), a downloaded model folder, or 'tiny'")
    run = open_stage_for(cfg, policy_path)
    if run.complete:
        print(f"ppo: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        return _train(cfg, run, policy_path)


def open_stage_for(cfg: PPOConfig, policy_path: str) -> StageRun:
    """The stage run folder of ``cfg`` (content-addressed by config and inputs)."""
    from rlhf.core.runs import open_stage

    return open_stage(cfg, _inputs(cfg, policy_path))


def _learner_spec(cfg: PPOConfig, model_path: str, lr: float, threads: float):
    from rlhf.trainers.deepspeed_engine import LearnerSpec

    per_step = cfg.resources.learner_workers * cfg.learner.micro_batch_size
    return LearnerSpec(model_path=model_path, dtype=cfg.model.dtype, device=cfg.model.device, lr=lr,
                       weight_decay=cfg.learner.weight_decay, max_grad_norm=cfg.learner.max_grad_norm,
                       zero_stage=cfg.learner.zero_stage, micro_batch_size=cfg.learner.micro_batch_size,
                       grad_accum_steps=cfg.algorithm.mini_batch_size // per_step,
                       lora=cfg.model.lora if cfg.model.lora.enabled else None, seed=cfg.run.seed,
                       threads=max(1, int(threads)), gradient_checkpointing=cfg.learner.gradient_checkpointing,
                       offload_optimizer=cfg.learner.offload_optimizer, offload_params=cfg.learner.offload_params)


def _critic_source(cfg: PPOConfig, policy_path: str) -> tuple[str, bool]:
    """(model path, fresh value head?) of the critic's initial weights."""
    from rlhf.models.loader import load_tokenizer
    from rlhf.roles.inference import reward_model_dir
    from rlhf.trainers.modeling import check_same_vocabulary

    if cfg.critic.init_from == "policy" or cfg.reward.model is None:
        return policy_path, True
    folder = str(reward_model_dir(cfg.reward.model))
    check_same_vocabulary(load_tokenizer(policy_path), load_tokenizer(folder), "critic.init_from=reward")
    return folder, False


def _start_roles(cfg: PPOConfig, policy_path: str, backend: str):
    """Place and start every role, then set up the learners (the launcher only wires)."""
    import ray

    from rlhf.core.cluster import worker_env
    from rlhf.roles.inference import ReferenceActor, RewardActor, RolloutWorker, reward_model_dir
    from rlhf.roles.launcher import ROLES, Roles, plan_bundles, start_actor, start_placement_group
    from rlhf.roles.learner import CriticLearner, PolicyLearner

    res = cfg.resources
    names = tuple(r for r in ROLES if r != "critic" or cfg.uses_critic)
    bundles, where = plan_bundles(res, names)
    roles = Roles(group=start_placement_group(bundles, res.strategy, res.ready_timeout_s))
    env = worker_env()
    model = cfg.model
    try:
        ranks = res.learner_workers
        spec = _learner_spec(cfg, policy_path, cfg.learner.lr, res.policy.num_cpus)
        roles.policy = [start_actor(PolicyLearner, roles.group, where["policy"][r], res.policy, env, spec, r, ranks,
                                    backend) for r in range(ranks)]
        vllm = cfg.rollout.vllm if cfg.rollout.engine == "vllm" else None
        roles.rollout = [start_actor(RolloutWorker, roles.group, where["rollout"][i], res.rollout, env, policy_path,
                                     cfg.rollout.engine, model.dtype, model.device, cfg.rollout.batch_size,
                                     max(1, int(res.rollout.num_cpus)), vllm, cfg.rollout_sleeps)
                         for i in range(res.rollout_workers)]
        roles.reference = start_actor(ReferenceActor, roles.group, where["reference"][0], res.reference, env,
                                      policy_path, model.dtype, model.device, cfg.learner.micro_batch_size,
                                      max(1, int(res.reference.num_cpus)))
        reward_model = str(reward_model_dir(cfg.reward.model)) if cfg.reward.model else None
        roles.reward = start_actor(RewardActor, roles.group, where["reward"][0], res.reward, env, reward_model,
                                   cfg.reward.function, model.dtype, model.device, cfg.reward.batch_size,
                                   max(1, int(res.reward.num_cpus)))
        address = ray.get(roles.policy[0].address.remote())
        setups = [p.setup.remote(*address) for p in roles.policy]
        if cfg.uses_critic:
            source, fresh = _critic_source(cfg, policy_path)
            critic_spec = _learner_spec(cfg, source, cfg.critic.lr, res.critic.num_cpus)
            roles.critic = [start_actor(CriticLearner, roles.group, where["critic"][r], res.critic, env, critic_spec,
                                        r, ranks, backend) for r in range(ranks)]
            critic_address = ray.get(roles.critic[0].address.remote())
            setups += [c.setup.remote(*critic_address, fresh) for c in roles.critic]
        ray.get(setups + [a.node_id.remote() for a in roles.all()])
    except BaseException:
        roles.shutdown()
        raise
    return roles


def _placement(roles) -> dict[str, list[str]]:
    """The Ray node of every actor, per role (written to ``placement.json``)."""
    import ray

    groups = {"rollout": roles.rollout, "policy": roles.policy, "critic": roles.critic,
              "reference": [roles.reference], "reward": [roles.reward]}
    return {name: ray.get([a.node_id.remote() for a in actors]) for name, actors in groups.items() if actors}


def _split(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal parts (prompt order kept)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(items[start:end])
        start = end
    return out


def _generate(workers, prompts: list[str], params, seeds: list[int]) -> list:
    import ray

    shards = _split(prompts, len(workers))
    refs = [w.generate.remote(shard, params, seed) for w, shard, seed in zip(workers, shards, seeds) if shard]
    return [sample for part in ray.get(refs) for sample in part]


def _rows(count: int, parts: int) -> list[torch.Tensor]:
    return list(torch.arange(count).chunk(parts))


def _evaluate(roles, prompts: list[str], params, seed: int, rubric) -> tuple[list[str], list[float]]:
    """One reply per held-out prompt from the current policy, and its rubric score."""
    samples = _generate(roles.rollout, prompts, params, [derive_seed(seed, "eval", i) for i in range(len(roles.rollout))])
    replies = [s.text for s in samples]
    return replies, [float(rubric(p, r)) for p, r in zip(prompts, replies)]


def _eval_baseline(run: StageRun, roles, prompts: list[str], params, seed: int, rubric) -> list[dict]:
    """The starting policy's held-out replies and scores (written once, reused at resume)."""
    path = run.path("eval_baseline.jsonl")
    if path.is_file():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    replies, scores = _evaluate(roles, prompts, params, seed, rubric)
    rows = [{"prompt": p, "reply": r, "gold": s} for p, r, s in zip(prompts, replies, scores)]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    return rows


def _win_rate_metrics(scores: list[float], baseline: list[dict]) -> dict[str, float]:
    from rlhf.eval.stats import compare_scores

    result = compare_scores(scores, [row["gold"] for row in baseline], n_boot=1000)
    return {"eval/win_rate": result.win_rate, "eval/win_rate_low": result.bootstrap.low,
            "eval/win_rate_high": result.bootstrap.high, "eval/gold_mean": statistics.fmean(scores),
            "eval/gold_mean_baseline": statistics.fmean(row["gold"] for row in baseline)}


def _save_checkpoint(run: StageRun, roles, state: ControllerState, keep: int) -> None:
    import ray

    from rlhf.roles import checkpoint as ckpt

    folder = ckpt.checkpoint_folder(run.dir, state.step)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    saves = [p.save_checkpoint.remote(str(folder / "policy"), {"step": state.step}) for p in roles.policy]
    saves += [c.save_checkpoint.remote(str(folder / "critic"), {"step": state.step}) for c in roles.critic]
    ray.get(saves)
    ckpt.save_controller_state(folder, state)
    ckpt.mark_complete(folder)
    ckpt.prune_checkpoints(run.dir, keep)


# The post-sync probe compares log-probs at temperature 1: a weight difference shows at any temperature,
# and vLLM scores given tokens at temperature 1 only.
PROBE_TEMPERATURE = 1.0


def _sync_rollout(roles, method: str, manifest, sleeping: bool) -> None:
    """Copy the policy into the rollout workers; sleeping vLLM engines wake their weights first and their
    KV cache after (so the learner's memory is free until the weights arrive)."""
    import ray

    if sleeping:
        ray.get([w.wake_up.remote(["weights"]) for w in roles.rollout])
    sync_weights(roles.policy, roles.rollout, method, manifest)
    if sleeping:
        ray.get([w.wake_up.remote(["kv_cache"]) for w in roles.rollout])


def _mean_stats(rows: list[dict[str, float]], prefix: str) -> dict[str, float]:
    keys = {k for row in rows for k in row}
    return {f"{prefix}{k}": statistics.fmean(row[k] for row in rows if k in row) for k in sorted(keys)}


def _train(cfg: PPOConfig, run: StageRun, policy_path: str) -> Path:
    import ray
    from tqdm import tqdm

    from rlhf.core.artifacts import reset_incomplete
    from rlhf.core.cluster import connect_ray
    from rlhf.core.paths import share_torch_extensions
    from rlhf.core.runs import MetricsLogger
    from rlhf.models.loader import load_tokenizer
    from rlhf.rl import (
        AdaptiveKLController,
        FixedKLController,
        apply_truncation,
        critic_warmup_active,
        group_mean_std,
        kl_estimate,
        truncated_importance_weights,
    )
    from rlhf.roles import checkpoint as ckpt
    from rlhf.roles.learner import PolicyLossSettings, merge_rank_stats
    from rlhf.rollout.containers import Batch, Rollout
    from rlhf.rollout.types import SamplingParams
    from rlhf.trainers.deepspeed_engine import rng_state, set_rng_state
    from rlhf.utils.callables import load_callable
    from rlhf.utils.seed import seed_everything

    # ------------------------------------------------------------ setup, in dependency order
    seed_everything(cfg.run.seed)
    algo, kl_cfg, res = cfg.algorithm, cfg.algorithm.kl, cfg.resources
    train_prompts, eval_prompts = _load_prompts(cfg)
    rubric = load_callable(cfg.eval.rubric) if eval_prompts else None
    pad_id = load_tokenizer(policy_path).pad_token_id
    params = SamplingParams(n=cfg.rollout.n, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                            top_k=cfg.rollout.top_k, max_new_tokens=cfg.rollout.max_new_tokens,
                            stop=tuple(cfg.rollout.stop))
    eval_temperature = cfg.rollout.temperature if cfg.eval.temperature is None else cfg.eval.temperature
    eval_params = SamplingParams(n=1, temperature=eval_temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                                 max_new_tokens=cfg.rollout.max_new_tokens, stop=tuple(cfg.rollout.stop))
    temperature = params.logprob_temperature
    kl_in_loss = kl_cfg.placement == "loss"
    loss_settings = PolicyLossSettings(algo.clip_low, algo.clip_high, algo.dual_clip, algo.aggregation,
                                       algo.entropy_coef, kl_in_loss, kl_cfg.estimator, temperature)
    kl_ctl = (AdaptiveKLController(kl_cfg.coef, kl_cfg.target, kl_cfg.horizon) if kl_cfg.adaptive
              else FixedKLController(kl_cfg.coef))
    stream = PromptStream(train_prompts, cfg.run.seed)
    start_step, probe = 0, None
    resume = ckpt.latest_checkpoint(run.dir)
    if resume is None:
        reset_incomplete(run)  # a run killed before its first checkpoint starts over
    backend_learn = "nccl" if res.policy.num_gpus > 0 else "gloo"
    backend_sync = "nccl" if res.policy.num_gpus > 0 and res.rollout.num_gpus > 0 else "gloo"
    share_torch_extensions()
    bundles_cpus = sum(getattr(res, r).num_cpus * res.count(r) for r in ("rollout", "policy", "critic",
                                                                         "reference", "reward"))
    started_ray = connect_ray(res.address, int(bundles_cpus + 0.999), res.object_store_mb)
    roles = None
    logger = MetricsLogger(run.dir)
    try:
        roles = _start_roles(cfg, policy_path, backend_learn)
        atomic_write_json(run.path("placement.json"), _placement(roles))
        manifest = ray.get(roles.policy[0].weight_manifest.remote())
        sync_method = connect_sync_group(roles.policy, roles.rollout, cfg.sync.method, backend_sync,
                                         cfg.sync.timeout_s, shares_gpu=cfg.rollout_shares_gpu and backend_sync == "nccl")
        print(f"ppo: {len(roles.rollout)} rollout worker(s), {len(roles.policy)} learner rank(s), "
              f"weight sync via {sync_method}")
        if resume is not None:
            state = ckpt.load_controller_state(resume)
            loads = [p.load_checkpoint.remote(str(resume / "policy")) for p in roles.policy]
            loads += [c.load_checkpoint.remote(str(resume / "critic")) for c in roles.critic]
            ray.get(loads)
            kl_ctl.load_state_dict(state.kl_controller)
            stream = PromptStream(train_prompts, cfg.run.seed, state.data)
            start_step, probe = state.step, (state.probe_prompt_ids, state.probe_response_ids)
            set_rng_state(state.rng)
            ckpt.truncate_metrics(logger.path, start_step)
            sync_weights(roles.policy, roles.rollout, sync_method, manifest)
            check_sync(roles.policy, roles.rollout, probe, PROBE_TEMPERATURE, cfg.sync.probe_tolerance, start_step)
            print(f"ppo: resumed from {resume.name} (step {start_step})")
        norm = ray.get(roles.reward.stats.remote()) if cfg.reward.model and cfg.reward.normalize else None
        if cfg.reward.model and cfg.reward.normalize and norm is None:
            raise UserError(f"{cfg.reward.model} has no reward_stats.json; set reward.normalize=false "
                            "or retrain the reward model")
        baseline = (_eval_baseline(run, roles, eval_prompts, eval_params, cfg.run.seed, rubric)
                    if eval_prompts else [])
        last_eval: tuple[list[str], list[float]] = ([], [])
        bar = tqdm(total=cfg.train.steps, initial=start_step, desc="ppo", disable=not cfg.train.progress)

        # ------------------------------------------------------------ the loop
        for step in range(start_step + 1, cfg.train.steps + 1):
            metrics: dict[str, float] = {}
            t_step = time.perf_counter()

            # 1. generate
            prompts = stream.take(cfg.rollout.prompts_per_step)
            seeds = [derive_seed(cfg.run.seed, "rollout", step, i) for i in range(len(roles.rollout))]
            rollout = Rollout.from_samples(_generate(roles.rollout, prompts, params, seeds), pad_id, cfg.rollout.n)
            if probe is None:
                probe = rollout.tokens.select(torch.arange(min(cfg.sync.probe_size, len(rollout)))).lists()
            if cfg.rollout_sleeps:
                ray.get([w.sleep.remote() for w in roles.rollout])
            metrics["timing/generation"] = time.perf_counter() - t_step

            # 2. score: reward, reference and behaviour log-probs, values (all roles at once)
            t0 = time.perf_counter()
            learner_rows = _rows(len(rollout), len(roles.policy))
            score_ref = roles.reward.score.remote(rollout.prompts, rollout.texts)
            ref_ref = roles.reference.logprobs.remote(rollout.tokens, temperature)
            old_refs = [p.logprobs.remote(rollout.tokens.select(rows), temperature)
                        for p, rows in zip(roles.policy, learner_rows)]
            value_refs = [c.values.remote(rollout.tokens.select(rows)) for c, rows in zip(roles.critic, learner_rows)]
            raw_scores = torch.tensor(ray.get(score_ref), dtype=torch.float32)
            ref_logprobs = ray.get(ref_ref)
            old_logprobs = torch.cat(ray.get(old_refs))
            values = torch.cat(ray.get(value_refs)) if value_refs else None
            metrics["timing/scoring"] = time.perf_counter() - t0

            # 3. rewards, KL, advantages (whole batch)
            t0 = time.perf_counter()
            mask = rollout.tokens.response_mask.to(torch.float32)
            rewards = normalise_rewards(raw_scores, norm and norm.mean, norm and norm.std, cfg.reward.clip)
            truncated = ~rollout.finished
            rewards, loss_mask = apply_truncation(rewards, truncated, algo.truncation, algo.truncation_penalty, mask)
            kl = kl_estimate(old_logprobs, ref_logprobs, kl_cfg.estimator) * mask
            advantages, returns = compute_advantages(
                algo.advantage, rewards, kl, kl_ctl.value, not kl_in_loss, mask, loss_mask, cfg.rollout.n, values,
                algo.gamma, algo.lam, algo.whiten_advantages, algo.grpo_std_normalise)
            is_weights = (truncated_importance_weights(old_logprobs, rollout.logprobs, loss_mask, algo.tis_cap)
                          if algo.rollout_correction == "tis" else None)
            batch = Batch(rollout.tokens, loss_mask, old_logprobs, advantages,
                          ref_logprobs=ref_logprobs if kl_in_loss else None, old_values=values, returns=returns,
                          is_weights=is_weights)
            metrics["timing/advantages"] = time.perf_counter() - t0

            # 4. PPO epochs over shuffled mini-batches (each split over the learner ranks)
            t0 = time.perf_counter()
            train_policy = not (cfg.uses_critic and critic_warmup_active(step - 1, cfg.critic.warmup_steps))
            policy_rows, critic_rows = [], []
            for epoch in range(algo.epochs):
                order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(
                    derive_seed(cfg.run.seed, "minibatch", step, epoch)))
                for rows in order.split(algo.mini_batch_size):
                    mini = batch.select(rows)
                    shards = [mini.select(r) for r in _rows(len(mini), len(roles.policy))]
                    counts = (mini.token_count, mini.sequence_count)
                    policy_refs = [p.train_minibatch.remote(s, loss_settings, kl_ctl.value, *counts)
                                   for p, s in zip(roles.policy, shards)] if train_policy else []
                    critic_refs = [c.train_minibatch.remote(s, cfg.critic.value_clip, algo.aggregation, *counts)
                                   for c, s in zip(roles.critic, shards)]
                    if policy_refs:
                        policy_rows.append(merge_rank_stats(ray.get(policy_refs)))
                    if critic_refs:
                        critic_rows.append(merge_rank_stats(ray.get(critic_refs)))
            metrics["timing/training"] = time.perf_counter() - t0

            # 5. KL controller, weight sync and its check
            sequence_kl = kl.sum(dim=1)
            kl_ctl.update(float(sequence_kl.mean()), len(rollout))
            t0 = time.perf_counter()
            _sync_rollout(roles, sync_method, manifest, cfg.rollout_sleeps)
            probe_diff = check_sync(roles.policy, roles.rollout, probe, PROBE_TEMPERATURE, cfg.sync.probe_tolerance,
                                    step)
            metrics["timing/sync"] = time.perf_counter() - t0

            # 6. log
            lengths = rollout.response_lengths.to(torch.float32)
            beta = kl_ctl.value if not kl_in_loss else 0.0
            metrics.update({
                "rollout/score_mean": float(raw_scores.mean()), "rollout/score_std": float(raw_scores.std()),
                "rollout/reward_mean": float(rewards.mean()), "rollout/response_length": float(lengths.mean()),
                "rollout/finished_rate": float(rollout.finished.float().mean()),
                "rollout/logprob_gap": float(((rollout.logprobs - old_logprobs).abs() * mask).sum() / mask.sum()),
                "rollout/advantage_std": float(advantages[loss_mask.bool()].std()) if loss_mask.sum() > 1 else 0.0,
                "rollout/sync_probe_diff": probe_diff,
                "objective/kl": float(sequence_kl.mean()), "objective/kl_coef": float(kl_ctl.value),
                "objective/rlhf_reward": float((rewards - beta * sequence_kl).mean()),
                "objective/non_score_reward": float((-beta * sequence_kl).mean()),
                **_mean_stats(policy_rows, "train/"), **_mean_stats(critic_rows, "train/critic_"),
            })
            if is_weights is not None and loss_mask.sum() > 0:
                valid = loss_mask.bool()
                metrics["rollout/is_weight_mean"] = float(is_weights[valid].mean())
                metrics["rollout/is_weight_capped"] = float((is_weights[valid] >= algo.tis_cap).float().mean())
            if cfg.rollout.n >= 2:
                _, group_std = group_mean_std(raw_scores, group_size=cfg.rollout.n)
                metrics["rollout/zero_std_groups"] = float((group_std == 0).float().mean())
            if baseline and (step == cfg.train.steps or (cfg.eval.every and step % cfg.eval.every == 0)):
                t0 = time.perf_counter()
                last_eval = _evaluate(roles, eval_prompts, eval_params, cfg.run.seed, rubric)
                metrics.update(_win_rate_metrics(last_eval[1], baseline))
                metrics["timing/eval"] = time.perf_counter() - t0
            metrics["timing/step"] = time.perf_counter() - t_step
            metrics["timing/samples_per_s"] = len(rollout) / metrics["timing/step"]
            metrics["timing/tokens_per_s"] = float(lengths.sum()) / metrics["timing/step"]
            logger.log(step, metrics)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['rollout/score_mean']:.3f}", kl=f"{metrics['objective/kl']:.3f}",
                            **({"win": f"{metrics['eval/win_rate']:.2f}"} if "eval/win_rate" in metrics else {}))

            # 7. checkpoint
            if step % cfg.train.save_steps == 0 and step < cfg.train.steps:
                t0 = time.perf_counter()
                _save_checkpoint(run, roles, ControllerState(step, stream.position, kl_ctl.state_dict(),
                                                             probe[0], probe[1], rng_state()),
                                 cfg.train.keep_checkpoints)
                logger.log(step, {"timing/checkpoint": time.perf_counter() - t0})
        bar.close()

        # ------------------------------------------------------------ save
        ray.get([p.save_pretrained.remote(str(run.path("model"))) for p in roles.policy])
        final = _final_metrics(run, eval_prompts, last_eval, baseline)
    finally:
        logger.close()
        if roles is not None:
            roles.shutdown()
        if started_ray:
            ray.shutdown()
    atomic_write_json(run.path("metrics.json"), final)
    shutil.rmtree(run.path("checkpoints"), ignore_errors=True)
    outputs = ["model", "metrics.json", "metrics.jsonl", "placement.json"]
    outputs += ["eval_baseline.jsonl", "samples.jsonl"] if baseline else []
    run.finish(outputs, metrics=final)
    print(f"ppo: done -> {run.path('model')}")
    return run.dir


def _final_metrics(run: StageRun, prompts: list[str], last_eval: tuple[list[str], list[float]],
                   baseline: list[dict]) -> dict[str, float]:
    """The last logged value of every metric; writes the final held-out replies beside the baseline's."""
    rows = [json.loads(line) for line in run.path("metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    final: dict[str, float] = {}
    for row in rows:
        final.update({k: v for k, v in row.items() if k != "time"})
    if baseline:
        lines = [{"prompt": p, "reply": r, "gold": s, "baseline_reply": b["reply"], "baseline_gold": b["gold"]}
                 for p, r, s, b in zip(prompts, *last_eval, baseline)]
        atomic_write_text(run.path("samples.jsonl"), "".join(json.dumps(line) + "\n" for line in lines))
    return final
