"""The ``ppo`` stage's config: PPO, GRPO, RLOO and REINFORCE++ under Ray (the recipe is ``rlhf/stages/ppo.py``).

Shared concepts use the one schema every stage uses: ``rollout`` extends
:class:`~rlhf.rollout.sampling.SamplingConfig` (``rollout.temperature``, ``top_p``, ``top_k``,
``max_new_tokens``, ``stop``), ``deepspeed`` is :class:`~rlhf.trainers.hf.DeepSpeedSettings` (an unset ZeRO
stage is ZeRO 0: the learners always run a DeepSpeed engine), ``eval`` is
:class:`~rlhf.eval.heldout.HeldoutConfig` (the same held-out prompts SFT and DPO evaluate) plus ``every``,
and ``resources`` is :class:`~rlhf.roles.launcher.ResourcesConfig` (a
:class:`~rlhf.core.cluster.ClusterSettings`). Importing this module imports no torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rlhf.core.config import RunConfig, StrictModel
from rlhf.eval.heldout import HeldoutConfig
from rlhf.models.config import ModelConfig
from rlhf.rl.types import Advantage, AggregationMode, KLKind, KLPlacement, TruncationMode
from rlhf.roles.launcher import ResourcesConfig
from rlhf.rollout.sampling import SamplingConfig
from rlhf.rollout.vllm_settings import VLLMSettings, check_vllm_temperature
from rlhf.trainers.hf import DeepSpeedSettings

__all__ = ["AlgorithmConfig", "CriticConfig", "KLConfig", "LearnerConfig", "PPOConfig", "PPODataConfig",
           "PPOEvalConfig", "PPOTrainConfig", "RewardConfig", "RolloutConfig", "SyncConfig"]


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

    placement: KLPlacement = Field("reward", description="in the token rewards (PPO) or the loss (GRPO)")
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
    behaviour_logprobs: Literal["auto", "learner", "rollout"] = Field(
        "auto", description="the PPO ratio's behaviour log-probs: learner (recomputed by the policy learner), "
        "rollout (the engine's own from sampling, no extra pass) or auto: rollout with the transformers engine in "
        "float32, synchronous and without rollout_correction (where the two agree within 1e-4), else learner")
    kl: KLConfig = Field(default_factory=KLConfig)


class RolloutConfig(SamplingConfig):
    """The rollout batch: the engine, how many prompts and replies, and (from :class:`SamplingConfig`) how
    replies are sampled. The temperature must be above 0: the policy loss needs sampled log-probs."""

    temperature: float = Field(1.0, ge=0.0, description="sampling temperature, > 0 (the policy loss needs the "
                               "log-probs of sampled replies; greedy decoding has none)")
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="rollout engine: transformers (CPU or GPU) or vllm (CUDA only, the vllm extra)")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="vLLM engine settings (engine=vllm)")
    prompts_per_step: int = Field(16, ge=1, description="prompts per step")
    n: int = Field(1, ge=1, description="replies per prompt (>= 2 for grpo and rloo)")
    batch_size: int = Field(64, ge=1, description="prompts per generation batch per worker (each with its n replies)")
    asynchronous: bool = Field(
        False, description="sample step t+1 while the learners train step t, with the weights synced after step "
        "t-1 (one step off-policy; needs algorithm.rollout_correction=tis); false: every batch comes from the "
        "current policy")

    @model_validator(mode="after")
    def _sampled(self) -> RolloutConfig:
        if self.temperature <= 0:
            raise ValueError(f"rollout.temperature must be > 0, got {self.temperature:g}: the policy is trained on "
                             "the log-probs of sampled replies (greedy decoding has none)")
        return self


class LearnerConfig(StrictModel):
    """Policy optimizer settings (the critic shares all but the learning rate; DeepSpeed is ``deepspeed``)."""

    lr: float = Field(1e-5, gt=0, description="policy learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    micro_batch_size: int = Field(8, ge=1, description="samples per forward/backward on one rank")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")


class SyncConfig(StrictModel):
    """Weight sync to the rollout workers and its probe check."""

    method: Literal["auto", "broadcast", "object_store"] = Field(
        "auto", description="torch.distributed broadcast, the Ray object store, or broadcast with fallback")
    timeout_s: float = Field(120.0, gt=0, description="sync group set-up and broadcast timeout")
    probe_size: int = Field(4, ge=1, description="samples in the probe batch")
    probe_tolerance: float = Field(1e-3, gt=0, description="largest allowed log-prob difference (nats) after sync")
    probe_every: int = Field(10, ge=1, description="probe check after the first sync, every Nth step's sync and "
                             "the last (1: every sync); rollout/logprob_gap compares the engine and the learner "
                             "on every step's batch")


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


class PPOEvalConfig(HeldoutConfig):
    """Held-out win rate against the starting policy: the held-out evaluation of every stage, repeated
    every ``every`` steps."""

    every: int = Field(0, ge=0, description="evaluate every N steps (0: only at the end)")


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
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings,
                                         description="the policy and critic learners' DeepSpeed engine (unset "
                                         "zero_stage: ZeRO 0)")
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
        if self.model.lora.enabled and self.deepspeed.stage == 3:
            raise ValueError("model.lora with deepspeed.zero_stage=3 is not supported; use zero_stage 0-2 with LoRA")
        if self.critic.init_from == "reward" and self.reward.model is None:
            raise ValueError("critic.init_from=reward needs reward.model; use critic.init_from=policy")
        if algo.truncation == "penalty" and algo.truncation_penalty == 0:
            raise ValueError("algorithm.truncation=penalty needs algorithm.truncation_penalty > 0")
        if "tis_cap" in algo.model_fields_set and algo.rollout_correction != "tis":
            raise ValueError("algorithm.tis_cap applies to algorithm.rollout_correction=tis; set that or remove "
                             "algorithm.tis_cap")
        if algo.behaviour_logprobs == "rollout" and algo.rollout_correction == "tis":
            raise ValueError("algorithm.rollout_correction=tis weighs the learner's behaviour log-probs against the "
                             "engine's, so it needs algorithm.behaviour_logprobs=learner (or auto)")
        if rollout.asynchronous and algo.rollout_correction != "tis":
            raise ValueError("rollout.asynchronous samples each batch with the weights of one step before; set "
                             "algorithm.rollout_correction=tis to correct for it")
        self._check_vllm()
        if rollout.asynchronous and self.rollout_sleeps:
            raise ValueError("rollout.asynchronous keeps the vLLM engines generating while the learner trains, but "
                             "they sleep to lend it their GPU; give the rollout its own GPUs or set "
                             "rollout.vllm.sleep=off")
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
        check_vllm_temperature(self.eval.sampling.temperature, "eval.sampling.temperature")
        if self.rollout_shares_gpu and "gpu_memory_utilization" not in rollout.vllm.model_fields_set:
            raise ValueError("the rollout shares its GPU with the policy learner: set rollout.vllm.gpu_memory_utilization "
                             "to vLLM's share of that GPU (e.g. 0.3; the default 0.85 assumes a GPU of its own)")
        if rollout.vllm.sleep == "on" and not self.rollout_shares_gpu:
            raise ValueError("rollout.vllm.sleep=on frees the GPU for a learner on the same GPU, but the rollout "
                             "role is not colocated with the policy; add [rollout, policy] to resources.colocate "
                             "or set rollout.vllm.sleep=auto")

    @property
    def behaviour_from_rollout(self) -> bool:
        """The PPO ratio takes the engine's sampled log-probs as the behaviour log-probs (no learner pass)."""
        choice = self.algorithm.behaviour_logprobs
        if choice != "auto":
            return choice == "rollout"
        return (self.rollout.engine == "transformers" and self.model.dtype == "float32"
                and not self.rollout.asynchronous and self.algorithm.rollout_correction == "none")

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
