"""``rlhf train ppo``: PPO and the critic-free GRPO, RLOO and REINFORCE++ under Ray, in one controller loop.

Read top to bottom: setup in dependency order, the loop, save. The config is
:class:`rlhf.configs.ppo.PPOConfig`. The roles are Ray actors (:mod:`rlhf.roles`): rollout workers (a
:class:`~rlhf.rollout.types.RolloutEngine` each), the policy learner and, for GAE, the critic learner
(DeepSpeed engines, ZeRO 0-3, torch AdamW, optional LoRA), the frozen reference policy and the reward (a
reward model from an RM stage folder, or a ``module:function``). The method and its options are in
``docs/ppo.md``, the metrics in ``docs/metrics.md``, the formulas in ``docs/rl-math.md``.

Implementation details, in the order a run meets them:

1. Training prompts come from a seeded stream, reshuffled every epoch, whose position is checkpointed
   (:class:`rlhf.data.stream.PromptStream`); none of them is a held-out prompt
   (:func:`rlhf.eval.heldout.training_prompts_without`).
2. Every random choice takes a seed derived from (run seed, purpose, step, index), so the steps after a
   resume repeat those of the interrupted run (:func:`rlhf.data.stream.derive_seed`).
3. The step's prompts are split over the rollout workers, each sampling ``rollout.n`` replies per prompt
   (:func:`rlhf.roles.group.start_generation`); a vLLM engine sharing the policy's GPU then sleeps until the
   sync. With ``rollout.asynchronous`` the workers sample step t+1 while the learners train step t, with the
   weights synced after step t-1: ``rollout/staleness`` (the policy steps between the weights that sampled a
   batch and those it trains) is 1 from step 2, and TIS (item 9) corrects for it. The first step after a
   resume is sampled with the resumed weights (staleness 0), so it is not the interrupted run's step.
4. Reward, reference log-probs, behaviour log-probs and critic values are computed at once on their roles.
   The behaviour log-probs are recomputed by the policy learner, so the rollout engine's numerics never
   enter the PPO ratio (:meth:`rlhf.roles.learner.PolicyLearner.logprobs`), unless
   ``algorithm.behaviour_logprobs`` takes the engine's own (by default, with the transformers engine in float32
   and synchronous rollout, where the two agree within 1e-4); then the learner measures ``rollout/logprob_gap``
   on the step's first mini-batch, before its update. With the KL in the loss only the learners need the
   reference log-probs: their passes go mini-batch by mini-batch in training order, and each update runs its
   forward pass beside its own and waits for it before the loss (:func:`rlhf.roles.group.start_reference`),
   so the reference works while the policy trains.
5. Rewards are normalised with the RM's stored mean/std, then clipped (:func:`rlhf.rl.normalise_rewards`).
6. Replies cut by ``rollout.max_new_tokens`` get a penalty or leave the loss (:func:`rlhf.rl.apply_truncation`).
7. The per-token KL to the reference is estimated on the behaviour log-probs (:func:`rlhf.rl.kl_estimate`).
8. Advantages are computed on the whole batch, never per shard: GAE (whitened over the batch), GRPO, RLOO
   or REINFORCE++, with the KL in the token rewards or, GRPO style, left to the loss
   (:func:`rlhf.rl.compute_advantages`).
9. With ``algorithm.rollout_correction: tis``, truncated importance weights correct for the rollout engine's
   numerics (:func:`rlhf.rl.truncated_importance_weights`).
10. ``algorithm.epochs`` passes over the batch in a seeded order, one optimizer step per mini-batch split
    over the learner ranks, each shard's loss normalised by the whole mini-batch's token count, so any split
    gives the unsplit update (:func:`rlhf.roles.group.train_minibatch`).
11. The policy loss of a micro-batch is the clipped ratio (clip-higher, dual-clip) times the TIS weight,
    plus beta times the KL when it is in the loss, minus the entropy bonus (:func:`rlhf.rl.ppo_objective`);
    dropout is off in the learners (:class:`rlhf.trainers.deepspeed_engine.DeepSpeedModel`).
12. The critic regresses the GAE returns with a clipped value loss (:func:`rlhf.rl.value_loss`); during
    ``critic.warmup_steps`` only the critic trains (:func:`rlhf.rl.critic_warmup_active`).
13. The KL coefficient is fixed or adapted to the step's mean sequence KL (:class:`rlhf.rl.AdaptiveKLController`).
14. The policy's weights go to the rollout workers (:func:`rlhf.roles.group.sync_rollout`; with LoRA and the
    transformers engine only the adapters' factors, which the engine merges), then both score
    a fixed probe batch and must agree within ``sync.probe_tolerance`` (:func:`rlhf.roles.weight_sync.check_sync`).
    Each phase's wall time is logged as ``timing/<phase>``, and what the actors spent computing in it as
    ``timing/compute/<work>`` (:mod:`rlhf.roles.busy`); the difference is Ray and controller overhead.
15. Every ``eval.every`` steps and at the end the policy answers the held-out prompts every stage evaluates
    (:func:`rlhf.eval.heldout.heldout_prompts`), and the rubric compares each reply with the starting
    policy's (:func:`rlhf.eval.heldout.heldout_comparison`: ``eval/win_rate``, ties count half).
16. Every ``train.save_steps`` steps the learners' DeepSpeed states and the controller's state are
    checkpointed; a rerun resumes from the newest complete checkpoint (:func:`rlhf.roles.group.save_checkpoint`).

Outputs (``runs/ppo/<name>-<fingerprint>/``): ``model/``, ``metrics.jsonl`` + ``tensorboard/``,
``metrics.json``, ``eval_baseline.jsonl`` and ``samples.jsonl`` (held-out replies, start and end),
``placement.json`` (the Ray node of every actor), ``manifest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from rlhf.configs.ppo import PPOConfig
from rlhf.core.artifacts import StageRun, atomic_write_json, reset_incomplete
from rlhf.core.cluster import connect_ray
from rlhf.core.errors import UserError
from rlhf.core.paths import share_torch_extensions
from rlhf.core.runs import MetricsLogger, open_stage
from rlhf.data.stream import PromptStream, derive_seed
from rlhf.eval.heldout import (
    heldout_comparison,
    heldout_inputs,
    heldout_prompts,
    prompt_file,
    score_replies,
    training_prompts_without,
    write_samples,
)
from rlhf.models.loader import load_tokenizer, resolve_model_path
from rlhf.rl import (
    AdaptiveKLController,
    FixedKLController,
    PolicyLossSettings,
    apply_truncation,
    compute_advantages,
    critic_warmup_active,
    group_mean_std,
    kl_estimate,
    normalise_rewards,
    truncated_importance_weights,
)
from rlhf.roles import checkpoint as ckpt
from rlhf.roles.group import (
    PendingRollout,
    RoleSpecs,
    busy_seconds,
    critic_source,
    generate,
    load_checkpoint,
    placement,
    rows,
    save_checkpoint,
    start_generation,
    start_reference,
    start_roles,
    sync_rollout,
    train_minibatch,
)
from rlhf.roles.inference import ReferenceSpec, RewardSpec, RolloutSpec, reward_model_dir
from rlhf.roles.learner import mean_stats
from rlhf.roles.weight_sync import check_sync, connect_sync_group
from rlhf.rollout.containers import Batch, Rollout
from rlhf.trainers.deepspeed_engine import LearnerSpec, rng_state, set_rng_state
from rlhf.trainers.hf import lora_outputs
from rlhf.utils.heap import freeze_heap
from rlhf.utils.seed import seed_everything

__all__ = ["PPOConfig", "open_stage_for", "role_specs", "run_ppo", "training_prompts"]


def run_ppo(cfg: PPOConfig) -> Path:
    """Run (or skip, when already complete) the PPO stage; returns the stage folder."""
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
    """The stage run folder of ``cfg``, content-addressed by the config and the inputs' hashes."""
    inputs: dict[str, str | Path] = {"policy": policy_path}
    if cfg.reward.model:
        inputs["reward_model"] = reward_model_dir(cfg.reward.model)
    if cfg.data.path:
        inputs["prompts"] = prompt_file(cfg.data.path, "train")
    inputs.update(heldout_inputs(cfg.eval))
    return open_stage(cfg, inputs)


def training_prompts(cfg: PPOConfig, held_out: list[str]) -> list[str]:
    """The train split of ``data.path`` (a prompt file or prepare stage folder) or ``data.demo_prompts`` demo
    prompts (drawn apart from the held-out seed range), minus any held-out prompt."""
    if cfg.data.path:
        from rlhf.data.prompts import load_prompt_records

        prompts = [record.prompt for record in load_prompt_records(prompt_file(cfg.data.path, "train"))]
    else:
        from rlhf.world.demo import generate_prompts

        prompts = [prompt.text for prompt in generate_prompts(cfg.data.demo_prompts, seed=cfg.run.seed + 30_000)]
    return training_prompts_without(prompts, held_out)


def role_specs(cfg: PPOConfig, policy_path: str) -> RoleSpecs:
    """Every role's spec: the one place the roles' settings are read from the config."""
    model, learner, res = cfg.model, cfg.learner, cfg.resources
    accumulation = cfg.algorithm.mini_batch_size // (res.learner_workers * learner.micro_batch_size)

    def learner_spec(path: str, lr: float, threads: int) -> LearnerSpec:
        return LearnerSpec(model_path=path, dtype=model.dtype, device=model.device, lr=lr,
                           weight_decay=learner.weight_decay, max_grad_norm=learner.max_grad_norm,
                           deepspeed=cfg.deepspeed, micro_batch_size=learner.micro_batch_size,
                           grad_accum_steps=accumulation, lora=model.lora if model.lora.enabled else None,
                           seed=cfg.run.seed, threads=threads, gradient_checkpointing=learner.gradient_checkpointing)

    critic, fresh_head = None, False
    if cfg.uses_critic:
        source, fresh_head = critic_source(cfg.critic.init_from, cfg.reward.model, policy_path)
        critic = learner_spec(source, cfg.critic.lr, res.critic.threads)
    vllm = cfg.rollout.vllm if cfg.rollout.engine == "vllm" else None
    return RoleSpecs(
        rollout=RolloutSpec(policy_path, cfg.rollout.engine, model.dtype, model.device, cfg.rollout.batch_size,
                            res.rollout.threads, vllm, cfg.rollout_sleeps),
        reference=ReferenceSpec(policy_path, model.dtype, model.device, learner.micro_batch_size,
                                res.reference.threads),
        reward=RewardSpec(str(reward_model_dir(cfg.reward.model)) if cfg.reward.model else None, cfg.reward.function,
                          model.dtype, model.device, cfg.reward.batch_size, res.reward.threads),
        policy=learner_spec(policy_path, learner.lr, res.policy.threads), critic=critic, critic_fresh_head=fresh_head)


def _heldout(workers: list, prompts: list[str], params, cfg: PPOConfig) -> tuple[list[str], list[float]]:
    """One reply per held-out prompt from the current policy (fixed seeds), and its rubric score."""
    seeds = [derive_seed(cfg.run.seed, "eval", i) for i in range(len(workers))]
    replies = [sample.text for sample in generate(workers, prompts, params, seeds)]
    return replies, score_replies(prompts, replies, cfg.eval.rubric)


def _baseline(path: Path, workers: list, prompts: list[str], params, cfg: PPOConfig) -> tuple[list[str], list[float]]:
    """The starting policy's held-out replies and scores: written once to ``path``, read back at resume."""
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return [row["reply"] for row in rows], [row["gold"] for row in rows]
    replies, scores = _heldout(workers, prompts, params, cfg)
    write_samples(path, prompts, replies, scores)
    return replies, scores


def _train(cfg: PPOConfig, run: StageRun, policy_path: str) -> Path:
    # ------------------------------------------------------------ setup, in dependency order
    seed_everything(cfg.run.seed)
    algo, kl_cfg, res, eval_cfg = cfg.algorithm, cfg.algorithm.kl, cfg.resources, cfg.eval
    held_out = heldout_prompts(eval_cfg, cfg.run.seed)
    stream = PromptStream(training_prompts(cfg, held_out), cfg.run.seed)
    pad_id = load_tokenizer(policy_path).pad_token_id
    params, eval_params = cfg.rollout.params(cfg.rollout.n), eval_cfg.sampling.params()
    kl_in_loss, from_rollout = kl_cfg.placement == "loss", cfg.behaviour_from_rollout
    loss_settings = PolicyLossSettings(algo.clip_low, algo.clip_high, algo.dual_clip, algo.aggregation,
                                       algo.entropy_coef, kl_in_loss, kl_cfg.estimator, params.logprob_temperature)
    kl_ctl = (AdaptiveKLController(kl_cfg.coef, kl_cfg.target, kl_cfg.horizon) if kl_cfg.adaptive
              else FixedKLController(kl_cfg.coef))
    specs = role_specs(cfg, policy_path)
    start_step, probe = 0, None
    resume = ckpt.latest_checkpoint(run.dir)
    if resume is None:
        reset_incomplete(run)  # a run killed before its first checkpoint starts over
    learner_backend = "nccl" if res.policy.num_gpus > 0 else "gloo"
    sync_backend = "nccl" if res.policy.num_gpus > 0 and res.rollout.num_gpus > 0 else "gloo"
    share_torch_extensions()
    started_ray = connect_ray(res.address, res.cpus(), res.object_store_mb)
    roles, logger = None, MetricsLogger(run.dir)
    try:
        roles = start_roles(specs, res, learner_backend)
        atomic_write_json(run.path("placement.json"), placement(roles))
        lora_sync = cfg.rollout.engine == "transformers" and any(ray.get([p.sync_lora_only.remote()
                                                                           for p in roles.policy]))
        manifest = ray.get(roles.policy[0].weight_manifest.remote())
        sync_method = connect_sync_group(roles.policy, roles.rollout, cfg.sync.method, sync_backend,
                                         cfg.sync.timeout_s, shares_gpu=cfg.rollout_shares_gpu and sync_backend == "nccl")
        print(f"ppo: {len(roles.rollout)} rollout worker(s), {len(roles.policy)} learner rank(s), "
              f"weight sync via {sync_method}" + (" (LoRA factors only)" if lora_sync else ""))
        if resume is not None:
            state = load_checkpoint(roles, resume)
            kl_ctl.load_state_dict(state.kl_controller)
            stream = PromptStream(stream.prompts, cfg.run.seed, state.data)
            start_step, probe = state.step, (state.probe_prompt_ids, state.probe_response_ids)
            set_rng_state(state.rng)
            ckpt.truncate_metrics(logger.path, start_step)
            sync_rollout(roles, sync_method, manifest, sleeping=False, version=start_step)
            check_sync(roles.policy, roles.rollout, probe, cfg.sync.probe_tolerance, start_step)
            print(f"ppo: resumed from {resume.name} (step {start_step})")
        norm = ray.get(roles.reward.stats.remote()) if cfg.reward.model and cfg.reward.normalize else None
        if cfg.reward.model and cfg.reward.normalize and norm is None:
            raise UserError(f"{cfg.reward.model} has no reward_stats.json; set reward.normalize=false "
                            "or retrain the reward model")
        baseline = (_baseline(run.path("eval_baseline.jsonl"), roles.rollout, held_out, eval_params, cfg)
                    if held_out else None)
        busy_seconds(roles)  # set-up and the baseline's generation are not a step's work
        freeze_heap()  # no full garbage collection over the libraries' objects in the loop
        latest: tuple[list[str], list[float]] | None = None
        pending: PendingRollout | None = None  # the next step's batch, being sampled (rollout.asynchronous)

        def start_rollout(step: int) -> PendingRollout:
            seeds = [derive_seed(cfg.run.seed, "rollout", step, i) for i in range(len(roles.rollout))]
            return start_generation(roles.rollout, stream.take(cfg.rollout.prompts_per_step), params, seeds)

        bar = tqdm(total=cfg.train.steps, initial=start_step, desc="ppo", disable=not cfg.train.progress)

        # ------------------------------------------------------------ the loop
        for step in range(start_step + 1, cfg.train.steps + 1):
            metrics: dict[str, float] = {}
            t_step = time.perf_counter()

            # 1. generate (asynchronous: collect the batch started during the previous step, start the next)
            samples, version = (pending or start_rollout(step)).result()
            position = stream.position  # this step's prompts taken, the next step's not: the resume point
            pending = start_rollout(step + 1) if cfg.rollout.asynchronous and step < cfg.train.steps else None
            rollout = Rollout.from_samples(samples, pad_id, cfg.rollout.n)
            if probe is None:
                probe = rollout.tokens.select(torch.arange(min(cfg.sync.probe_size, len(rollout)))).lists()
            if cfg.rollout_sleeps:
                ray.get([w.sleep.remote() for w in roles.rollout])
            metrics["timing/generation"] = time.perf_counter() - t_step

            # 2. score: reward, reference and behaviour log-probs, values (all roles at once); with the KL in the
            #    loss, the reference passes go mini-batch by mini-batch and the updates wait for theirs only
            t0 = time.perf_counter()
            shards = rows(len(rollout), len(roles.policy))
            orders = [torch.randperm(len(rollout), generator=torch.Generator().manual_seed(
                derive_seed(cfg.run.seed, "minibatch", step, epoch))) for epoch in range(algo.epochs)]
            score_ref = roles.reward.score.remote(rollout.prompts, rollout.texts)
            reference = (start_reference(roles, rollout.tokens, list(orders[0].split(algo.mini_batch_size)),
                                         loss_settings.temperature) if kl_in_loss else None)
            ref_ref = None if kl_in_loss else roles.reference.logprobs.remote(rollout.tokens, loss_settings.temperature)
            old_refs = [] if from_rollout else [p.logprobs.remote(rollout.tokens.select(r), loss_settings.temperature)
                                                for p, r in zip(roles.policy, shards)]
            value_refs = [c.values.remote(rollout.tokens.select(r)) for c, r in zip(roles.critic, shards)]
            raw_scores = torch.tensor(ray.get(score_ref), dtype=torch.float32)
            ref_logprobs = None if ref_ref is None else ray.get(ref_ref)
            old_logprobs = rollout.logprobs if from_rollout else torch.cat(ray.get(old_refs))
            values = torch.cat(ray.get(value_refs)) if value_refs else None
            metrics["timing/scoring"] = time.perf_counter() - t0

            # 3. rewards, KL, advantages (whole batch)
            t0 = time.perf_counter()
            mask = rollout.tokens.response_mask.to(torch.float32)
            rewards = normalise_rewards(raw_scores, norm and norm.mean, norm and norm.std, cfg.reward.clip)
            rewards, loss_mask = apply_truncation(rewards, ~rollout.finished, algo.truncation,
                                                  algo.truncation_penalty, mask)
            # with the KL in the loss, the advantages do not see it (it is measured after the updates)
            kl = (torch.zeros_like(mask) if kl_in_loss
                  else kl_estimate(old_logprobs, ref_logprobs, kl_cfg.estimator) * mask)
            advantages, returns = compute_advantages(
                algo.advantage, rewards, kl, kl_ctl.value, not kl_in_loss, mask, loss_mask, cfg.rollout.n, values,
                algo.gamma, algo.lam, algo.whiten_advantages, algo.grpo_std_normalise)
            is_weights = (truncated_importance_weights(old_logprobs, rollout.logprobs, loss_mask, algo.tis_cap)
                          if algo.rollout_correction == "tis" else None)
            batch = Batch(rollout.tokens, loss_mask, old_logprobs, advantages, old_values=values, returns=returns,
                          is_weights=is_weights)
            metrics["timing/advantages"] = time.perf_counter() - t0

            # 4. PPO epochs over shuffled mini-batches (each split over the learner ranks)
            t0 = time.perf_counter()
            train_policy = not (cfg.uses_critic and critic_warmup_active(step - 1, cfg.critic.warmup_steps))
            policy_rows, critic_rows = [], []
            for epoch, order in enumerate(orders):
                for index, minibatch in enumerate(order.split(algo.mini_batch_size)):
                    policy_stats, critic_stats = train_minibatch(
                        roles, batch.select(minibatch), loss_settings, kl_ctl.value, cfg.critic.value_clip,
                        train_policy, logprob_gap=from_rollout and not policy_rows,
                        reference=reference.shards[index] if reference and epoch == 0 else None)
                    policy_rows.extend([policy_stats] if policy_stats else [])
                    critic_rows.extend([critic_stats] if critic_stats else [])
                if reference and epoch == 0:  # the later epochs, and the KL, take the whole batch's
                    batch = replace(batch, ref_logprobs=reference.gather(len(batch), batch.tokens.response_width))
                    kl = kl_estimate(old_logprobs, batch.ref_logprobs, kl_cfg.estimator) * mask
            metrics["timing/training"] = time.perf_counter() - t0
            if not from_rollout:
                gap = (rollout.logprobs - old_logprobs).abs() * mask
                metrics["rollout/logprob_gap"] = float(gap.sum() / mask.sum())
            elif policy_rows:
                metrics["rollout/logprob_gap"] = policy_rows[0].pop("logprob_gap")

            # 5. KL controller, weight sync and its check
            sequence_kl = kl.sum(dim=1)
            kl_ctl.update(float(sequence_kl.mean()), len(rollout))
            t0 = time.perf_counter()
            sync_rollout(roles, sync_method, manifest, cfg.rollout_sleeps, version=step)
            probed = step == start_step + 1 or step % cfg.sync.probe_every == 0 or step == cfg.train.steps
            if probed:
                metrics["rollout/sync_probe_diff"] = check_sync(roles.policy, roles.rollout, probe,
                                                                cfg.sync.probe_tolerance, step)
            metrics["timing/sync"] = time.perf_counter() - t0
            metrics.update(busy_seconds(roles))

            # 6. log
            lengths = rollout.response_lengths.to(torch.float32)
            beta = kl_ctl.value if not kl_in_loss else 0.0
            metrics.update({
                "rollout/score_mean": float(raw_scores.mean()), "rollout/score_std": float(raw_scores.std()),
                "rollout/reward_mean": float(rewards.mean()), "rollout/response_length": float(lengths.mean()),
                "rollout/finished_rate": float(rollout.finished.float().mean()),
                "rollout/advantage_std": float(advantages[loss_mask.bool()].std()) if loss_mask.sum() > 1 else 0.0,
                "rollout/staleness": float(step - 1 - version),
                "objective/kl": float(sequence_kl.mean()), "objective/kl_coef": float(kl_ctl.value),
                "objective/rlhf_reward": float((rewards - beta * sequence_kl).mean()),
                "objective/non_score_reward": float((-beta * sequence_kl).mean()),
                **mean_stats(policy_rows, "train/"), **mean_stats(critic_rows, "train/critic_"),
            })
            if is_weights is not None and loss_mask.sum() > 0:
                valid = loss_mask.bool()
                metrics["rollout/is_weight_mean"] = float(is_weights[valid].mean())
                metrics["rollout/is_weight_capped"] = float((is_weights[valid] >= algo.tis_cap).float().mean())
            if cfg.rollout.n >= 2:
                _, group_std = group_mean_std(raw_scores, group_size=cfg.rollout.n)
                metrics["rollout/zero_std_groups"] = float((group_std == 0).float().mean())
            if baseline and (step == cfg.train.steps or (eval_cfg.every and step % eval_cfg.every == 0)):
                t0 = time.perf_counter()
                latest = _heldout(roles.rollout, held_out, eval_params, cfg)
                comparison = heldout_comparison(latest[1], baseline[1], n_boot=eval_cfg.bootstrap)
                metrics.update({f"eval/{name}": value for name, value in comparison.items()})
                metrics["timing/eval"] = time.perf_counter() - t0
                busy_seconds(roles)  # the evaluation's generation is timed by timing/eval, not the next step
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
                state = ckpt.ControllerState(step, position, kl_ctl.state_dict(), probe[0], probe[1],
                                             rng_state())
                save_checkpoint(run.dir, roles, state, cfg.train.keep_checkpoints)
                logger.log(step, {"timing/checkpoint": time.perf_counter() - t0})
        bar.close()

        # ------------------------------------------------------------ save
        lora_save = cfg.model.lora.saved
        if lora_save in ("adapter", "both"):
            folder = run.path("model" if lora_save == "adapter" else "adapter")
            ray.get([p.save_adapter.remote(str(folder)) for p in roles.policy])
        if lora_save != "adapter":
            ray.get([p.save_pretrained.remote(str(run.path("model"))) for p in roles.policy])
        if baseline and latest:
            write_samples(run.path("samples.jsonl"), held_out, *latest, *baseline)
    finally:
        logger.close()
        if roles is not None:
            roles.shutdown()
        if started_ray:
            ray.shutdown()
    final: dict[str, float] = {}  # the last logged value of every metric
    for line in run.path("metrics.jsonl").read_text(encoding="utf-8").splitlines():
        final.update({key: value for key, value in json.loads(line).items() if key != "time"})
    atomic_write_json(run.path("metrics.json"), final)
    shutil.rmtree(run.path("checkpoints"), ignore_errors=True)
    outputs = [*lora_outputs(lora_save), "metrics.json", "metrics.jsonl", "placement.json"]
    outputs += ["eval_baseline.jsonl", "samples.jsonl"] if baseline else []
    run.finish(outputs, metrics=final)
    print(f"ppo: done -> {run.path('model')}")
    return run.dir
