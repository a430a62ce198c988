"""What every rollout engine takes and returns, and the protocol they share.

A rollout engine turns prompts into sampled replies with per-token log-probabilities, takes new weights
from a learner, and scores given tokens for the post-sync probe check. Candidate generation for annotation,
PPO/GRPO rollout workers and a vLLM engine all meet this one :class:`RolloutEngine` protocol.

:class:`SamplingParams` maps field for field onto ``vllm.SamplingParams`` (``max_new_tokens`` is vLLM's
``max_tokens``; see :meth:`SamplingParams.vllm_kwargs`), so a vLLM engine needs no translation table.

Log-prob convention: ``RolloutSample.logprobs[t] = log softmax(logits_t / temperature)[response_ids[t]]``,
the sampling distribution before top-k/top-p truncation (temperature 1 when decoding greedily). The
learners compute their log-probs the same way, so both sides compare like for like.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

__all__ = ["NamedTensors", "RolloutEngine", "RolloutSample", "SamplingParams"]

NamedTensors = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``n`` replies per prompt, temperature, nucleus/top-k truncation, length, stop strings.

    ``temperature == 0`` decodes greedily; ``top_k == 0`` and ``top_p == 1`` disable truncation.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1 (replies per prompt), got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 disables nucleus sampling), got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables top-k), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        """True when decoding picks the most likely token."""
        return self.temperature == 0

    @property
    def logprob_temperature(self) -> float:
        """The temperature log-probs are computed at (1 when greedy)."""
        return 1.0 if self.greedy else self.temperature

    def vllm_kwargs(self, seed: int | None = None) -> dict:
        """Keyword arguments of ``vllm.SamplingParams`` with the same meaning (one log-prob per token)."""
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p,
                "top_k": self.top_k if self.top_k > 0 else -1, "max_tokens": self.max_new_tokens,
                "stop": list(self.stop), "seed": seed, "logprobs": 0}


@dataclass(frozen=True)
class RolloutSample:
    """One sampled reply.

    ``prompt_ids``: the chat-templated prompt; ``response_ids``: the generated tokens, EOS included when
    the reply finished with it; ``logprobs``: one per response token (see the module docstring);
    ``finished``: the reply ended with EOS or a stop string (False: cut by ``max_new_tokens``);
    ``text``: the decoded reply, special tokens and stop string removed.
    """

    prompt: str
    text: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finished: bool

    def __post_init__(self) -> None:
        if len(self.logprobs) != len(self.response_ids):
            raise ValueError(f"{len(self.logprobs)} log-probs for {len(self.response_ids)} response tokens; "
                             "an engine must return one log-prob per generated token")


@runtime_checkable
class RolloutEngine(Protocol):
    """Samples replies, takes new weights, and scores given tokens.

    ``generate`` returns ``len(prompts) * params.n`` samples, prompt-major (the ``n`` replies to prompt
    ``i`` are at ``i * n .. i * n + n - 1``), deterministic for equal weights, inputs and ``seed``.
    ``load_weights`` copies tensors by parameter name and returns how many it loaded; an unknown name or
    a shape mismatch is an error, never skipped. ``logprobs`` scores each response given its prompt with
    the same convention as ``generate`` (one list per row, one float per response token).
    """

    def generate(self, prompts: list[str], params: SamplingParams, seed: int) -> list[RolloutSample]: ...

    def load_weights(self, weights: NamedTensors) -> int: ...

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]],
                 temperature: float = 1.0) -> list[list[float]]: ...
