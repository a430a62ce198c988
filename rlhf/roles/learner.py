"""Learner roles: the policy and the critic, each one data-parallel rank of a DeepSpeed engine.

Both are plain classes (the launcher turns them into Ray actors) with the same life cycle: construct
(cheap), ``setup`` (join the role's process group, load the model, build the engine), then per step
``logprobs``/``values`` for the rollout batch and ``train_minibatch`` per PPO mini-batch.

Policy loss per micro-batch: :func:`rlhf.rl.losses.ppo_objective`, the clipped surrogate with the behaviour
log-probs recomputed by this learner (times the batch's truncated importance weights when present), plus
``kl_coef * KL`` when the KL term is in the loss (GRPO), minus ``entropy_coef * entropy``; all aggregated
over the whole mini-batch's token (or sequence) count. Critic loss: :func:`rlhf.rl.losses.value_loss`, the
(optionally clipped) value loss against the GAE returns.

Training statistics come back as :class:`RankStats`: loss values already normalised over the mini-batch
(summed across micro-batches and ranks) and token-weighted sums of per-token diagnostics.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from rlhf.rl.losses import PolicyLossSettings, ppo_objective, value_loss
from rlhf.rl.types import AggregationMode
from rlhf.roles.busy import BusyRole, BusyTime, busy
from rlhf.rollout.containers import Batch, TokenBatch, pad_columns
from rlhf.rollout.sequences import response_logprobs
from rlhf.rollout.weight_transfer import SyncGroup, TensorSpec, manifest_of, send_tensors
from rlhf.trainers.deepspeed_engine import DeepSpeedModel, LearnerSpec, init_learner_process_group, node_address
from rlhf.trainers.modeling import exported_weights, has_lora, lora_deltas, token_values, unwrap, zero_value_head

__all__ = ["CriticLearner", "PolicyLearner", "RankStats", "mean_stats", "merge_rank_stats"]


@dataclass
class RankStats:
    """One rank's statistics of one mini-batch: ``losses`` sum over ranks, ``weighted`` are per-token
    means times ``tokens`` (divide the cross-rank sum by the total tokens)."""

    losses: dict[str, float] = field(default_factory=dict)
    weighted: dict[str, float] = field(default_factory=dict)
    tokens: int = 0
    grad_norm: float | None = None

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        self.losses[name] = self.losses.get(name, 0.0) + float(value.detach())

    def add_mean(self, name: str, value: float, tokens: int) -> None:
        self.weighted[name] = self.weighted.get(name, 0.0) + value * tokens


def merge_rank_stats(stats: list[RankStats]) -> dict[str, float]:
    """Combine the ranks' :class:`RankStats` of one mini-batch into plain metrics."""
    tokens = sum(s.tokens for s in stats)
    out = {name: sum(s.losses.get(name, 0.0) for s in stats) for name in stats[0].losses}
    for name in stats[0].weighted:
        out[name] = sum(s.weighted.get(name, 0.0) for s in stats) / max(tokens, 1)
    if stats[0].grad_norm is not None:
        out["grad_norm"] = float(stats[0].grad_norm)
    return out


def mean_stats(rows: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """The mean of each statistic over a step's mini-batches (:func:`merge_rank_stats` rows), prefixed."""
    keys = {k for row in rows for k in row}
    return {f"{prefix}{k}": statistics.fmean(row[k] for row in rows if k in row) for k in sorted(keys)}


def _global_counts(aggregation: AggregationMode, tokens: int, sequences: int) -> dict[str, int]:
    if aggregation == "token_mean":
        return {"global_token_count": max(tokens, 1)}
    return {"global_seq_count": max(sequences, 1)}


def _to(tensor: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


class _Rank(BusyRole):
    """What both learner roles share: rank bookkeeping and the process group."""

    def __init__(self, spec: LearnerSpec, rank: int, world_size: int, backend: str) -> None:
        self.spec = spec
        self.rank = rank
        self.world_size = world_size
        self.backend = backend
        self.model: DeepSpeedModel | None = None
        self.busy = BusyTime()

    def address(self) -> tuple[str, int]:
        """Rendezvous address for this role's process group (asked of rank 0)."""
        return node_address()

    def node_id(self) -> str:
        """The Ray node this rank runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def _join(self, master_addr: str, master_port: int) -> None:
        from rlhf.utils.seed import seed_everything

        torch.set_num_threads(max(1, self.spec.threads))
        init_learner_process_group(self.rank, self.world_size, master_addr, master_port, self.backend)
        seed_everything(self.spec.seed + self.rank)

    @property
    def engine(self):
        if self.model is None:
            raise RuntimeError("call setup() before using a learner")
        return self.model.engine

    def save_checkpoint(self, folder: str, client_state: dict) -> None:
        """Save module, optimizer and RNG states into ``folder`` (every rank)."""
        self.model.save(folder, client_state)

    def load_checkpoint(self, folder: str) -> dict:
        """Restore from :meth:`save_checkpoint`; returns the client state."""
        return self.model.load(folder)


class PolicyLearner(_Rank):
    """The policy: log-probs of rollouts, PPO updates, and the source of weight syncs."""

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group, load the policy (with LoRA adapters when configured), build the engine."""
        from rlhf.models.loader import load_model, load_tokenizer

        self._join(master_addr, master_port)
        model = load_model(self.spec.model_path, "policy", dtype=self.spec.dtype, device=self.spec.device,
                           lora=self.spec.lora)
        self.tokenizer = load_tokenizer(self.spec.model_path)
        self.model = DeepSpeedModel(model, self.spec, self.world_size)
        self._lora_sync = False
        self._manifest = manifest_of(self._sync_tensors())
        self._sync: SyncGroup | None = None

    def _weights(self):
        return exported_weights(self.engine, self.spec.zero_stage)

    def _sync_tensors(self):
        """What a sync sends: the LoRA factors (:meth:`sync_lora_only`) or every weight, merged."""
        return lora_deltas(self.engine) if self._lora_sync else self._weights()

    def sync_lora_only(self) -> bool:
        """Send only the LoRA factors from now on (for engines that merge them: the transformers engine), when
        the policy has plain LoRA adapters at ZeRO 0-2; returns whether it does. The base weights never change
        under LoRA, so the engine keeps its own."""
        self._lora_sync = self.spec.zero_stage < 3 and has_lora(self.engine)
        self._manifest = manifest_of(self._sync_tensors())
        return self._lora_sync

    @busy("policy_logprobs")
    def logprobs(self, tokens: TokenBatch, temperature: float) -> torch.Tensor:
        """Current policy's log-probs of the response tokens, ``[B, T]`` on the CPU."""
        return self._logprobs(tokens, temperature)

    @torch.no_grad()
    def _logprobs(self, tokens: TokenBatch, temperature: float) -> torch.Tensor:
        device = self.engine.device
        pieces = [pad_columns(response_logprobs(self.engine, chunk.input_ids.to(device),
                                                chunk.attention_mask.to(device), chunk.prompt_width,
                                                temperature).cpu(), tokens.response_width)
                  for chunk in tokens.chunks(self.spec.micro_batch_size)]
        return torch.cat(pieces)

    @busy("probe")
    def probe_logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]],
                       temperature: float) -> list[list[float]]:
        """Log-probs of given tokens, in the engines' list format (the post-sync probe)."""
        from rlhf.rollout.sequences import pack_sequences

        packed = pack_sequences(prompt_ids, response_ids, self.tokenizer.pad_token_id)
        logp = self._logprobs(TokenBatch(packed.input_ids, packed.attention_mask, packed.prompt_width), temperature)
        return [logp[row, :len(r)].tolist() for row, r in enumerate(response_ids)]

    @busy("policy_train")
    def train_minibatch(self, batch: Batch, loss: PolicyLossSettings, kl_coef: float, global_tokens: int,
                        global_sequences: int, logprob_gap: bool = False,
                        ref_logprobs: torch.Tensor | list | None = None) -> RankStats:
        """One optimizer step on this rank's share of a mini-batch (``grad_accum_steps`` micro-batches).

        ``logprob_gap``: also report ``logprob_gap``, the mean absolute difference per token between the
        policy's log-probs before this step and ``batch.old_logprobs`` (the engine's, when they stand in for
        the behaviour log-probs: on a step's first mini-batch, the policy is still the one that sampled).
        ``ref_logprobs``: the shard's reference log-probs when they come apart from ``batch``: a tensor, or a
        list holding the Ray object ref of a reference pass still running (Ray hands refs inside a list over
        unresolved), which is waited for only after the first micro-batch's forward pass."""
        pending = ref_logprobs if isinstance(ref_logprobs, list) else None
        if ref_logprobs is not None and pending is None:
            batch = replace(batch, ref_logprobs=ref_logprobs)
        counts = _global_counts(loss.aggregation, global_tokens, global_sequences)
        device = self.engine.device
        stats = RankStats(tokens=batch.token_count)
        size = self.spec.micro_batch_size
        references: list[torch.Tensor | None] | None = None  # per micro-batch, once a pending pass is in
        for index, micro in enumerate(batch.micro_batches(size)):
            mask = micro.loss_mask.to(device)
            logp, logits = response_logprobs(self.engine, micro.tokens.input_ids.to(device),
                                             micro.tokens.attention_mask.to(device), micro.tokens.prompt_width,
                                             loss.temperature, return_logits=True)
            if pending is not None and references is None:
                import ray

                whole = replace(batch, ref_logprobs=ray.get(pending[0]))
                references = [m.ref_logprobs for m in whole.micro_batches(size)]
            reference = micro.ref_logprobs if references is None else references[index]
            total, terms = ppo_objective(
                logp, logits, micro.old_logprobs.to(device), micro.advantages.to(device), mask, loss, kl_coef,
                ref_logp=_to(reference, device) if loss.kl_in_loss else None,
                is_weights=_to(micro.is_weights, device), **counts)
            stats.add_loss("policy_loss", terms.policy_loss)
            if terms.kl_loss is not None:
                stats.add_loss("kl_loss", terms.kl_loss)
            stats.add_loss("entropy", terms.entropy)
            tokens = int(mask.sum().item())
            if logprob_gap:
                gap = ((logp.detach() - micro.old_logprobs.to(device)).abs() * mask).sum() / max(tokens, 1)
                stats.add_mean("logprob_gap", float(gap), tokens)
            self.model.backward(total)
            norm = self.model.step()
            if norm is not None:
                stats.grad_norm = norm
            for name, value in terms.policy.to_dict().items():
                if name != "ratio_max":
                    stats.add_mean(name, value, tokens)
        stats.weighted["lr"] = self.model.lr * max(stats.tokens, 1)
        return stats

    def weight_manifest(self) -> list[TensorSpec]:
        """Names, shapes and dtypes of the tensors a sync sends, in order."""
        return self._manifest

    def init_sync_group(self, master_addr: str, master_port: int, world_size: int, backend: str,
                        timeout_s: float) -> None:
        """Rank 0 joins the weight-sync group as its rank 0 (other ranks do nothing)."""
        if self.rank == 0:
            self._sync = SyncGroup(master_addr, master_port, 0, world_size, backend, timeout_s)

    @busy("sync_send")
    def broadcast_weights(self) -> int:
        """Send every weight to the sync group (rank 0); other ranks take part in ZeRO-3 gathers only."""
        if self.rank != 0:
            for _ in self._sync_tensors():
                pass
            return 0
        if self._sync is None:
            raise RuntimeError("init_sync_group() was not called; use the object-store sync instead")
        return send_tensors(self._sync, self._sync_tensors(), self._manifest)

    def _on_cpu(self, named) -> dict[str, torch.Tensor]:
        """``named`` copied to the CPU (every rank iterates it: ZeRO-3 gathers); empty on ranks other than 0."""
        out = {name: tensor.detach().to("cpu", copy=True) for name, tensor in named}
        return out if self.rank == 0 else {}

    @busy("sync_send")
    def sync_payload(self) -> dict[str, torch.Tensor]:
        """What a sync sends, as CPU tensors (the object-store sync); empty on ranks other than 0."""
        return self._on_cpu(self._sync_tensors())

    def weights(self) -> dict[str, torch.Tensor]:
        """Every weight, LoRA merged, as a CPU tensor; empty on ranks other than 0."""
        return self._on_cpu(self._weights())

    def save_pretrained(self, folder: str) -> None:
        """Write the policy (LoRA merged, ZeRO-3 gathered) as an HF model folder with its tokenizer (rank 0)."""
        from rlhf.trainers.hf import publish_staged

        state = self.weights()
        if self.rank != 0:
            return
        target = Path(folder)
        staging = target.with_name(f".{target.name}.partial")
        unwrap(self.engine).save_pretrained(staging, state_dict=state, safe_serialization=True)
        self.tokenizer.save_pretrained(staging)
        publish_staged(staging, target)

    def save_adapter(self, folder: str) -> None:
        """Write the policy's LoRA adapter as a PEFT adapter folder with its tokenizer (rank 0; LoRA runs at
        ZeRO 0-2, where rank 0 holds every adapter weight)."""
        from rlhf.trainers.hf import save_model

        if self.rank == 0:
            save_model(getattr(self.engine, "module", self.engine), self.tokenizer, Path(folder))


class CriticLearner(_Rank):
    """The critic (GAE's value function): values of rollouts and value-loss updates."""

    def setup(self, master_addr: str, master_port: int, fresh_head: bool) -> None:
        """Join the process group and load the critic from ``spec.model_path`` (a reward model, or the
        policy with a fresh zero value head when ``fresh_head``)."""
        from rlhf.models.loader import load_model

        self._join(master_addr, master_port)
        model = load_model(self.spec.model_path, "critic", dtype=self.spec.dtype, device=self.spec.device,
                           lora=self.spec.lora)
        if fresh_head:
            zero_value_head(model)
        self.model = DeepSpeedModel(model, self.spec, self.world_size)

    @busy("critic_values")
    @torch.no_grad()
    def values(self, tokens: TokenBatch) -> torch.Tensor:
        """Critic values of the response tokens, ``[B, T]`` on the CPU."""
        return torch.cat([pad_columns(token_values(self.engine, chunk).cpu(), tokens.response_width)
                          for chunk in tokens.chunks(self.spec.micro_batch_size)])

    @busy("critic_train")
    def train_minibatch(self, batch: Batch, value_clip: float | None, aggregation: AggregationMode,
                        global_tokens: int, global_sequences: int) -> RankStats:
        """One optimizer step of the value loss on this rank's share of a mini-batch."""
        counts = _global_counts(aggregation, global_tokens, global_sequences)
        device = self.engine.device
        stats = RankStats(tokens=batch.token_count)
        for micro in batch.micro_batches(self.spec.micro_batch_size):
            mask = micro.loss_mask.to(device)
            values = token_values(self.engine, micro.tokens)
            loss, v_stats = value_loss(values, micro.old_values.to(device), micro.returns.to(device), mask,
                                       value_clip, aggregation, **counts)
            stats.add_loss("value_loss", loss)
            self.model.backward(loss)
            norm = self.model.step()
            if norm is not None:
                stats.grad_norm = norm
            tokens = int(mask.sum().item())
            stats.add_mean("value_clip_fraction", float(v_stats.clip_fraction), tokens)
            stats.add_mean("value_error", float(v_stats.value_error), tokens)
        return stats
