"""The vLLM rollout engine: vLLM's offline ``LLM`` behind the :class:`~rlhf.rollout.types.RolloutEngine` protocol.

vLLM is the ``vllm`` extra and runs on CUDA only; it is imported when an engine is built, never at module
import, and :func:`require_vllm` names what is missing (a GPU, or the package) in one line.

* Sampling: :class:`~rlhf.rollout.types.SamplingParams` maps one to one onto ``vllm.SamplingParams``
  (:meth:`~rlhf.rollout.types.SamplingParams.vllm_kwargs`); prompts are chat-templated token ids
  (``TokensPrompt``), the same ids the transformers engine builds; each prompt gets its own seed derived
  from the call's ``seed`` (:func:`request_seeds`), its ``n`` replies the seeds after it (vLLM's parallel
  sampling), so a call is reproducible and no two prompts share sampling noise.
* Log-probs: the engine is built with ``logprobs_mode="processed_logprobs"``: the log-prob of each sampled
  token under the distribution it was drawn from (temperature applied; with top-k/top-p also the
  truncation, renormalised). Without truncation that is the convention of :mod:`rlhf.rollout.types`.
  ``logprobs`` scores given tokens as prompt log-probs (temperature 1).
* Weights: learner tensors arrive under plain HF names; :func:`vllm_parameter_name` gives the vLLM
  parameter each one lands in (``q/k/v_proj`` into ``qkv_proj``, ``gate/up_proj`` into ``gate_up_proj``) and
  :func:`check_weight_names` checks, before anything is loaded, that the names cover the model's parameters
  exactly (no unknown name, no parameter or fused shard left out). Loading runs
  in every tensor-parallel worker through :mod:`rlhf.rollout.vllm_worker` (``collective_rpc``): from the
  weight-sync group (an NCCL broadcast from the learner's rank 0, the workers at ranks ``offset ..
  offset + tp - 1``) or from tensors handed over through the Ray object store, sent to the workers as
  raw bytes in chunks of ``LOAD_CHUNK_BYTES``. The prefix cache is reset after every load (a sleeping
  engine's was dropped by the sleep), so no cached key/value of the old weights is reused.
* Sharing a GPU with a learner: with ``sleep`` the engine frees its GPU memory between generations
  (``LLM.sleep(level=2)``: weights and KV cache dropped) and wakes in two steps around a weight load
  (``wake_up(["weights"])``, load every tensor, ``wake_up(["kv_cache"])``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from rlhf.core.errors import UserError
from rlhf.rollout.types import NamedTensors, RolloutSample, SamplingParams
from rlhf.rollout.vllm_settings import VLLMSettings, check_vllm_temperature

# VLLMSettings and check_vllm_temperature live in the torch-free rlhf.rollout.vllm_settings (re-exported here).
__all__ = ["VLLMRolloutEngine", "VLLMSettings", "byte_chunks", "check_vllm_temperature", "check_weight_names",
           "engine_kwargs", "prompt_token_logprobs", "request_seeds", "require_vllm", "samples_from_outputs",
           "vllm_parameter_name"]

WORKER_EXTENSION = "rlhf.rollout.vllm_worker.WeightSyncExtension"

# HF projection names that vLLM fuses into one parameter, and the shard each one fills.
_STACKED: tuple[tuple[str, str, str | int], ...] = (
    (".q_proj", ".qkv_proj", "q"), (".k_proj", ".qkv_proj", "k"), (".v_proj", ".qkv_proj", "v"),
    (".gate_proj", ".gate_up_proj", 0), (".up_proj", ".gate_up_proj", 1),
)
# Bytes of tensors handed to the vLLM workers in one collective_rpc call (the object-store sync).
LOAD_CHUNK_BYTES = 256 * 2**20
# Buffers some checkpoints carry that vLLM recomputes instead of loading.
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


def require_vllm():
    """Import vLLM, or raise a one-line :class:`UserError` naming what is missing."""
    if not torch.cuda.is_available():
        raise UserError("rollout engine 'vllm' needs a CUDA GPU and this machine has none; "
                        "use the 'transformers' engine (it runs on CPU and GPU)")
    try:
        import vllm
    except ImportError as err:
        raise UserError(f"rollout engine 'vllm' needs the vllm package ({err}); install it on the GPU nodes "
                        "with pip install 'rlhf-pipeline[vllm]'") from None
    return vllm


def request_seeds(seed: int, count: int) -> list[int]:
    """One 31-bit seed per prompt of a call, derived from ``seed``.

    vLLM gives the ``n`` replies of a request the seeds ``s .. s + n - 1``, and its sampling noise depends
    on the seed and the token position only: prompts sharing one seed would draw the same noise.
    """
    return [int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big") & 0x7FFFFFFF
            for i in range(count)]


def engine_kwargs(model_path: str, settings: VLLMSettings, dtype: str, sleep: bool, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``settings`` (one engine in one Ray actor)."""
    tp = settings.tensor_parallel_size
    kwargs: dict[str, Any] = {
        "model": model_path, "tokenizer": model_path, "dtype": dtype, "seed": seed,
        "tensor_parallel_size": tp, "distributed_executor_backend": "mp" if tp > 1 else "uni",
        "gpu_memory_utilization": settings.gpu_memory_utilization, "enforce_eager": settings.enforce_eager,
        "enable_prefix_caching": settings.enable_prefix_caching, "enable_sleep_mode": sleep,
        "logprobs_mode": "processed_logprobs", "worker_extension_cls": WORKER_EXTENSION,
    }
    if settings.max_model_len is not None:
        kwargs["max_model_len"] = settings.max_model_len
    return kwargs


def vllm_parameter_name(hf_name: str) -> tuple[str, str | int | None]:
    """The vLLM parameter an HF tensor loads into, and its shard of a fused parameter (None: the whole)."""
    for hf_part, vllm_part, shard in _STACKED:
        if hf_part in hf_name:
            return hf_name.replace(hf_part, vllm_part), shard
    return hf_name, None


def check_weight_names(hf_names: Iterable[str], vllm_names: Iterable[str], tied_embeddings: bool) -> int:
    """Raise ``ValueError`` unless the HF tensors cover the vLLM model exactly; returns how many load.

    Every HF name must have a vLLM parameter, and every vLLM parameter must get a tensor, every shard of a
    fused one included: a sync that leaves ``k_proj`` out would leave a third of ``qkv_proj`` stale, and
    after a level-2 sleep a parameter that gets nothing holds garbage. A tied ``lm_head.weight`` and rotary
    caches are accepted and not loaded (vLLM shares the embedding and recomputes the caches).
    """
    known = set(vllm_names)
    unknown: list[str] = []
    shards: dict[str, set] = {}
    covered: set[str] = set()
    loaded = 0
    for name in hf_names:
        if name.endswith(_SKIPPED_SUFFIXES) or (tied_embeddings and name.startswith("lm_head.")):
            continue
        target, shard = vllm_parameter_name(name)
        if target not in known:
            unknown.append(name)
            continue
        if shard is not None:
            shards.setdefault(target, set()).add(shard)
        covered.add(target)
        loaded += 1
    if unknown:
        raise ValueError(f"{len(unknown)} learner weights have no vLLM parameter (first: '{unknown[0]}' -> "
                         f"'{vllm_parameter_name(unknown[0])[0]}'); the learner and the rollout engine must load "
                         "the same architecture (merge LoRA adapters first)")
    expected = {".qkv_proj": {"q", "k", "v"}, ".gate_up_proj": {0, 1}}
    for target, got in shards.items():
        need = next(v for k, v in expected.items() if k in target)
        if got != need:
            missing = sorted(map(str, need - got))
            raise ValueError(f"vLLM parameter '{target}' would get shards {sorted(map(str, got))} but not {missing}; "
                             "send every projection of a fused layer")
    left = sorted(known - covered)
    if left:
        raise ValueError(f"{len(left)} vLLM parameters would get no learner tensor (first: '{left[0]}'); "
                         "a weight sync must send every weight of the model")
    return loaded


def byte_chunks(items: list[tuple[str, torch.Tensor]], limit: int) -> list[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of ``(name, tensor)`` of at most ``limit`` bytes each (a larger tensor goes alone)."""
    chunks: list[list[tuple[str, torch.Tensor]]] = []
    size = 0
    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if not chunks or (size + nbytes > limit and chunks[-1]):
            chunks.append([])
            size = 0
        chunks[-1].append((name, tensor))
        size += nbytes
    return chunks


def samples_from_outputs(prompts: list[str], prompt_ids: list[list[int]], outputs: list, n: int) -> list[RolloutSample]:
    """Turn ``vllm.LLM.generate`` results (one ``RequestOutput`` per prompt, ``n`` completions each) into
    prompt-major :class:`RolloutSample` rows.

    ``token_ids`` keep the EOS token and the tokens of a matched stop string; ``finish_reason == "stop"``
    (EOS, a stop token or a stop string) is a finished reply, ``"length"`` a truncated one, anything else
    (an aborted request) an error.
    """
    if len(outputs) != len(prompts):
        raise RuntimeError(f"vLLM returned {len(outputs)} results for {len(prompts)} prompts")
    samples: list[RolloutSample] = []
    for prompt, ids, request in zip(prompts, prompt_ids, outputs):
        if len(request.outputs) != n:
            raise RuntimeError(f"vLLM returned {len(request.outputs)} completions for a prompt, expected n={n}")
        for completion in sorted(request.outputs, key=lambda c: c.index):
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM ended a request with finish_reason={completion.finish_reason!r}; "
                                   "the engine aborted it (check the vLLM log)")
            tokens = list(completion.token_ids)
            steps = completion.logprobs or []
            if len(steps) != len(tokens):
                raise RuntimeError(f"vLLM returned {len(steps)} log-probs for {len(tokens)} tokens; "
                                   "sampling must request logprobs=0")
            logprobs = tuple(float(step[token].logprob) for step, token in zip(steps, tokens))
            samples.append(RolloutSample(prompt=prompt, text=completion.text.strip(), prompt_ids=tuple(ids),
                                         response_ids=tuple(tokens), logprobs=logprobs,
                                         finished=completion.finish_reason == "stop"))
    return samples


def prompt_token_logprobs(prompt_len: int, response: list[int], prompt_logprobs: list) -> list[float]:
    """The log-probs of ``response`` read from the prompt log-probs of ``prompt + response``."""
    if len(prompt_logprobs) != prompt_len + len(response):
        raise RuntimeError(f"vLLM returned {len(prompt_logprobs)} prompt log-probs for "
                           f"{prompt_len + len(response)} tokens")
    return [float(prompt_logprobs[prompt_len + t][token].logprob) for t, token in enumerate(response)]


class VLLMRolloutEngine:
    """A :class:`~rlhf.rollout.types.RolloutEngine` over ``vllm.LLM`` (CUDA only; the ``vllm`` extra)."""

    def __init__(self, llm, tokenizer, settings: VLLMSettings | None = None, tied_embeddings: bool = False,
                 sleep: bool = False) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.settings = settings or VLLMSettings()
        self.tied_embeddings = tied_embeddings
        self.sleep_enabled = sleep
        self._parameter_names: list[str] | None = None
        self._kv_cache_asleep = False

    @classmethod
    def from_pretrained(cls, model_path: str, settings: VLLMSettings | None = None, dtype: str = "bfloat16",
                        sleep: bool = False) -> VLLMRolloutEngine:
        """Build ``vllm.LLM`` over the model folder ``model_path`` (raises :class:`UserError` without CUDA
        or the vllm package)."""
        vllm = require_vllm()
        from transformers import AutoConfig

        from rlhf.models.loader import load_tokenizer

        settings = settings or VLLMSettings()
        tied = bool(getattr(AutoConfig.from_pretrained(model_path), "tie_word_embeddings", False))
        llm = vllm.LLM(**engine_kwargs(model_path, settings, dtype, sleep))
        return cls(llm, load_tokenizer(model_path), settings, tied, sleep)

    @property
    def sync_ranks(self) -> int:
        """Members this engine adds to the weight-sync group (one per tensor-parallel worker)."""
        return self.settings.tensor_parallel_size

    def _rpc(self, method: str, *args: Any) -> list:
        return self.llm.collective_rpc(method, args=args)

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """Chat-templated token ids of each prompt, assistant turn opened."""
        from rlhf.models.generation import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, prompts)

    def generate(self, prompts: list[str], params: SamplingParams, seed: int) -> list[RolloutSample]:
        """``len(prompts) * params.n`` samples, prompt-major; reproducible from ``seed``."""
        if not prompts:
            return []
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        ids = self.prompt_ids(prompts)
        per_prompt = [VLLMSamplingParams(**params.vllm_kwargs(s)) for s in request_seeds(seed, len(ids))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], per_prompt, use_tqdm=False)
        return samples_from_outputs(prompts, ids, outputs, params.n)

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]],
                 temperature: float = 1.0) -> list[list[float]]:
        """Log-prob of every response token given its prompt (vLLM prompt log-probs, temperature 1 only)."""
        if temperature != 1.0:
            raise ValueError(f"the vLLM engine scores given tokens at temperature 1 only, got {temperature}")
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        params = VLLMSamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p) + list(r))
                                     for p, r in zip(prompt_ids, response_ids)], params, use_tqdm=False)
        return [prompt_token_logprobs(len(p), list(r), out.prompt_logprobs)
                for p, r, out in zip(prompt_ids, response_ids, outputs)]

    def parameter_names(self) -> list[str]:
        """Names of the vLLM model's parameters (asked of the first worker once)."""
        if self._parameter_names is None:
            self._parameter_names = self._rpc("rlhf_parameter_names")[0]
        return self._parameter_names

    def _loaded(self, counts: list[int], expected: int) -> int:
        if any(c != expected for c in counts):
            raise RuntimeError(f"vLLM workers loaded {counts} tensors, expected {expected} each")
        if not self._kv_cache_asleep:  # a level-2 sleep already dropped the cache with the old weights' keys
            self.llm.reset_prefix_cache()
        return expected

    def load_weights(self, weights: NamedTensors) -> int:
        """Load tensors by HF name into every worker, about ``LOAD_CHUNK_BYTES`` per call; returns how many
        were loaded (see the protocol)."""
        from rlhf.rollout.vllm_worker import pack_tensors

        items = list(weights.items() if isinstance(weights, Mapping) else weights)
        check_weight_names([name for name, _ in items], self.parameter_names(), self.tied_embeddings)
        counts: list[int] | None = None
        for chunk in byte_chunks(items, LOAD_CHUNK_BYTES):
            got = self._rpc("rlhf_load_weights", pack_tensors(chunk))
            counts = got if counts is None else [a + b for a, b in zip(counts, got, strict=True)]
        return self._loaded(counts or [0], len(items))

    def join_sync_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int,
                        backend: str, timeout_s: float) -> None:
        """Every worker joins the learner's weight-sync group at rank ``rank_offset + its rank``."""
        self._rpc("rlhf_join_sync_group", master_addr, master_port, rank_offset, world_size, backend, timeout_s)

    def receive_weights(self, manifest: list) -> int:
        """Receive one broadcast of the tensors in ``manifest`` (:class:`~rlhf.rollout.weight_transfer.TensorSpec`)."""
        check_weight_names([spec.name for spec in manifest], self.parameter_names(), self.tied_embeddings)
        rows = [(spec.name, list(spec.shape), spec.dtype) for spec in manifest]
        return self._loaded(self._rpc("rlhf_receive_weights", rows), len(manifest))

    def sleep(self) -> None:
        """Free the GPU: drop weights and KV cache (the next weight load restores every tensor)."""
        if not self.sleep_enabled:
            raise RuntimeError("this engine was built without sleep mode")
        self.llm.sleep(level=2)
        self._kv_cache_asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate ``tags`` (``weights``, ``kv_cache``; None: everything)."""
        self.llm.wake_up(tags=tags)
        if tags is None or "kv_cache" in tags:
            self._kv_cache_asleep = False
