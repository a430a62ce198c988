"""Inference roles of the PPO loop: rollout workers, the reference model and the reward.

Plain classes, each built from one frozen spec (:class:`RolloutSpec`, :class:`ReferenceSpec`,
:class:`RewardSpec`); :mod:`rlhf.roles.group` starts them as Ray actors placed by config.

* :class:`RolloutWorker` serves a :class:`~rlhf.rollout.types.RolloutEngine` (transformers or vLLM) and
  receives weights over the sync group or through the object store; a vLLM engine that shares its GPU
  with a learner sleeps between generations.
* :class:`ReferenceActor` holds the frozen starting policy and returns its log-probs of rollout tokens.
* :class:`RewardActor` scores (prompt, reply) texts with a reward model (an RM stage folder: its ``model/``
  and the ``reward_stats.json`` mean/std measured at training time) or with a ``module:function`` called as
  ``f(prompt, reply) -> float``. It returns raw scores; the controller normalises and clips them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhf.core.errors import UserError
from rlhf.roles.busy import BusyRole, BusyTime, busy
from rlhf.rollout.containers import TokenBatch, pad_columns
from rlhf.rollout.engines import EngineKind
from rlhf.rollout.sequences import response_logprobs
from rlhf.rollout.types import NamedTensors, RolloutSample, SamplingParams
from rlhf.rollout.vllm_settings import VLLMSettings
from rlhf.rollout.weight_transfer import SyncGroup, TensorSpec, receive_tensors

__all__ = ["ReferenceActor", "ReferenceSpec", "RewardActor", "RewardSpec", "RewardStats", "RolloutSpec",
           "RolloutWorker", "reward_model_dir"]


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


@dataclass(frozen=True)
class RolloutSpec:
    """What a rollout worker builds: the engine ``engine`` over the policy at ``model_path``.

    ``batch_size`` and ``device`` apply to the transformers engine, ``vllm`` and ``sleep`` (free the GPU
    between generations) to the vLLM engine; ``threads`` are the worker's torch threads.
    """

    model_path: str
    engine: EngineKind = "transformers"
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 32
    threads: int = 1
    vllm: VLLMSettings | None = None
    sleep: bool = False


class RolloutWorker(BusyRole):
    """One rollout engine in its own process."""

    def __init__(self, spec: RolloutSpec) -> None:
        from rlhf.rollout.engines import open_engine

        torch.set_num_threads(max(1, spec.threads))
        self.engine = open_engine(spec.engine, spec.model_path, spec.dtype, spec.device, spec.batch_size, spec.vllm,
                                  spec.sleep)
        self._vllm = spec.engine == "vllm"
        self._sync: SyncGroup | None = None  # the transformers engine's membership (vLLM's lives in its workers)
        self._joined = False
        self.version = 0  # the policy step whose weights the engine holds (0: the starting weights)
        self.busy = BusyTime()

    def node_id(self) -> str:
        return _node_id()

    def weights_version(self) -> int:
        """The policy step of the weights in the engine (Ray runs an actor's calls in order, so asked right
        after ``generate`` this is the version that generated)."""
        return self.version

    @busy("rollout")
    def generate(self, prompts: list[str], params: SamplingParams, seed: int) -> list[RolloutSample]:
        return self.engine.generate(prompts, params, seed)

    @busy("probe")
    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]],
                 temperature: float) -> list[list[float]]:
        return self.engine.logprobs(prompt_ids, response_ids, temperature)

    def sync_ranks(self) -> int:
        """Members this worker adds to the weight-sync group (a vLLM engine: one per tensor-parallel GPU)."""
        return self.engine.sync_ranks if self._vllm else 1

    def init_sync_group(self, master_addr: str, master_port: int, rank: int, world_size: int, backend: str,
                        timeout_s: float) -> None:
        """Join the weight-sync group at ``rank`` (and the ranks after it, one per vLLM worker)."""
        if self._vllm:
            self.engine.join_sync_group(master_addr, master_port, rank, world_size, backend, timeout_s)
        else:
            self._sync = SyncGroup(master_addr, master_port, rank, world_size, backend, timeout_s)
        self._joined = True

    @busy("sync_receive")
    def receive_weights(self, manifest: list[TensorSpec], version: int) -> int:
        """Receive a broadcast from the learner and load it as the weights of policy step ``version``;
        returns how many tensors were loaded."""
        if not self._joined:
            raise RuntimeError("init_sync_group() was not called")
        if self._vllm:
            loaded = self.engine.receive_weights(manifest)
        else:
            loaded = self.engine.load_weights(receive_tensors(self._sync, manifest))
        self.version = version
        return loaded

    def sleep(self) -> None:
        """Free the GPU for the learner until the next weight sync (vLLM engines built with sleep)."""
        self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate what :meth:`sleep` freed (``weights``, ``kv_cache``; None: everything)."""
        self.engine.wake_up(tags)

    @busy("sync_receive")
    def load_weights(self, weights: NamedTensors, version: int) -> int:
        """Load weights handed over through the object store as those of policy step ``version``."""
        loaded = self.engine.load_weights(weights)
        self.version = version
        return loaded


@dataclass(frozen=True)
class ReferenceSpec:
    """The frozen reference policy at ``model_path``, scored ``batch_size`` samples at a time."""

    model_path: str
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 16
    threads: int = 1


class ReferenceActor(BusyRole):
    """The frozen reference policy (the starting point the KL term measures against)."""

    def __init__(self, spec: ReferenceSpec) -> None:
        from rlhf.models.loader import load_model

        torch.set_num_threads(max(1, spec.threads))
        self.model = load_model(spec.model_path, "reference", dtype=spec.dtype, device=spec.device)
        self.batch_size = spec.batch_size
        self.busy = BusyTime()

    def node_id(self) -> str:
        return _node_id()

    @busy("reference")
    @torch.no_grad()
    def logprobs(self, tokens: TokenBatch, temperature: float) -> torch.Tensor:
        """Reference log-probs of the response tokens, ``[B, T]`` on the CPU."""
        device = next(self.model.parameters()).device
        return torch.cat([
            pad_columns(response_logprobs(self.model, c.input_ids.to(device), c.attention_mask.to(device),
                                          c.prompt_width, temperature).cpu(), tokens.response_width)
            for c in tokens.chunks(self.batch_size)])


@dataclass(frozen=True)
class RewardStats:
    """Mean and std of the reward model's scores measured when it was trained."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise UserError(f"reward_stats.json has std {self.std}; it must be > 0 (retrain the reward model)")


def reward_model_dir(path: str) -> Path:
    """The model folder of a reward model given as an RM stage folder or a model folder."""
    folder = Path(path)
    if (folder / "model" / "config.json").is_file():
        return folder / "model"
    if (folder / "config.json").is_file():
        return folder
    raise UserError(f"reward.model {path} holds no reward model (no config.json or model/config.json); "
                    "point it at an RM stage folder")


@dataclass(frozen=True)
class RewardSpec:
    """The reward: exactly one of a reward ``model`` (an RM stage folder or model folder) and a reward
    ``function`` (``module:function``); the model scores ``batch_size`` replies at a time."""

    model: str | None = None
    function: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    batch_size: int = 32
    threads: int = 1

    def __post_init__(self) -> None:
        if (self.model is None) == (self.function is None):
            raise UserError("give exactly one of reward.model (an RM stage folder) or reward.function (module:function)")


class RewardActor(BusyRole):
    """Scores replies with a reward model or a reward function."""

    def __init__(self, spec: RewardSpec) -> None:
        torch.set_num_threads(max(1, spec.threads))
        self.batch_size = spec.batch_size
        self.busy = BusyTime()
        self._function = None
        self._stats: RewardStats | None = None
        if spec.function is not None:
            from rlhf.utils.callables import load_callable

            self._function = load_callable(spec.function)
            return
        from rlhf.models.loader import load_model, load_tokenizer
        from rlhf.models.reward import REWARD_STATS_FILE

        folder = reward_model_dir(str(spec.model))
        self.model = load_model(str(folder), "reward", dtype=spec.dtype, device=spec.device).eval()
        self.tokenizer = load_tokenizer(str(folder))
        stats_file = folder / REWARD_STATS_FILE
        if stats_file.is_file():
            data = json.loads(stats_file.read_text(encoding="utf-8"))
            self._stats = RewardStats(float(data["mean"]), float(data["std"]))

    def node_id(self) -> str:
        return _node_id()

    def stats(self) -> RewardStats | None:
        """The stored normalisation statistics (reward models only; None when absent)."""
        return self._stats

    @busy("reward")
    def score(self, prompts: list[str], replies: list[str]) -> list[float]:
        """Raw score of each (prompt, reply)."""
        if len(prompts) != len(replies):
            raise ValueError(f"{len(prompts)} prompts for {len(replies)} replies")
        if self._function is not None:
            scores = [float(self._function(p, r)) for p, r in zip(prompts, replies)]
        else:
            from rlhf.models.reward import reward_scores

            conversations = [[{"role": "user", "content": p}] for p in prompts]
            scores = reward_scores(self.model, self.tokenizer, conversations, replies, batch_size=self.batch_size)
        bad = [i for i, s in enumerate(scores) if not torch.isfinite(torch.tensor(s))]
        if bad:
            raise UserError(f"the reward returned a non-finite score for sample {bad[0]} "
                            f"(prompt {prompts[bad[0]][:60]!r}); fix the reward before training on it")
        return scores
