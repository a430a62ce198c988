"""Typed containers that travel between the controller and the Ray roles.

Shapes (``B`` samples, ``P`` prompt width, ``T`` response width; see :mod:`rlhf.rollout.sequences`):

* :class:`TokenBatch`: the packed tokens every model role reads (``input_ids``/``attention_mask`` ``[B, P+T]``).
* :class:`Rollout`: one step's samples as generated: tokens, texts, the engine's log-probs ``[B, T]``,
  which samples finished ``[B]`` and which prompt each answers (``group_ids`` ``[B]``).
* :class:`Batch`: what the learners train on: tokens plus the loss mask, behaviour-policy log-probs,
  advantages (all ``[B, T]``), and, when used, reference log-probs, rollout-time values and returns, and
  truncated importance weights correcting for the rollout engine's numerics.

Every tensor is on the CPU; roles move what they read to their own device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import torch

from rlhf.rollout.sequences import pack_sequences
from rlhf.rollout.types import RolloutSample

__all__ = ["Batch", "Rollout", "TokenBatch", "pad_columns"]


def pad_columns(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``[b, t]`` per-token values zero-padded on the right to ``[b, width]`` (undoes a trimmed slice)."""
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]))


def _take(tensor: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor.index_select(0, rows)


@dataclass(frozen=True)
class TokenBatch:
    """Prompt+response tokens of ``B`` samples."""

    input_ids: torch.Tensor  # [B, P + T] int64
    attention_mask: torch.Tensor  # [B, P + T] int64
    prompt_width: int  # P

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def response_mask(self) -> torch.Tensor:
        """``[B, T]``: 1 on real response tokens."""
        return self.attention_mask[:, self.prompt_width:]

    @property
    def response_ids(self) -> torch.Tensor:
        """``[B, T]``: the response tokens (padding included)."""
        return self.input_ids[:, self.prompt_width:]

    def select(self, rows: torch.Tensor) -> TokenBatch:
        """The rows ``rows`` (``[b]`` int64), same widths."""
        return TokenBatch(self.input_ids.index_select(0, rows), self.attention_mask.index_select(0, rows),
                          self.prompt_width)

    @property
    def response_width(self) -> int:
        """``T``."""
        return int(self.input_ids.shape[1]) - self.prompt_width

    def trimmed(self) -> TokenBatch:
        """The same rows without the columns that are padding in every row: prompt columns on the left,
        response columns on the right. Positions come from the attention mask, so a model reads the same
        tokens at the same positions, with less padding; per-token results cover the first
        :attr:`response_width` columns of the untrimmed ``[B, T]`` (:func:`pad_columns` restores ``T``)."""
        real = self.attention_mask.bool()
        prompt = real[:, :self.prompt_width].any(dim=0).nonzero()
        first = int(prompt[0]) if len(prompt) else self.prompt_width
        response = real[:, self.prompt_width:].any(dim=0).nonzero()
        end = self.prompt_width + (int(response[-1]) + 1 if len(response) else 0)
        return TokenBatch(self.input_ids[:, first:end], self.attention_mask[:, first:end], self.prompt_width - first)

    def chunks(self, size: int) -> Iterator[TokenBatch]:
        """Consecutive slices of at most ``size`` rows, each :meth:`trimmed`."""
        for start in range(0, len(self), size):
            yield self.select(torch.arange(start, min(start + size, len(self)))).trimmed()

    def lists(self) -> tuple[list[list[int]], list[list[int]]]:
        """Unpadded (prompt ids, response ids) per row, for an engine's ``logprobs``."""
        prompts, responses = [], []
        for row in range(len(self)):
            mask = self.attention_mask[row].bool()
            prompt = self.input_ids[row, :self.prompt_width][mask[:self.prompt_width]]
            response = self.input_ids[row, self.prompt_width:][mask[self.prompt_width:]]
            prompts.append(prompt.tolist())
            responses.append(response.tolist())
        return prompts, responses


@dataclass(frozen=True)
class Rollout:
    """One step's samples, prompt-major (the ``n`` samples of prompt ``g`` carry ``group_ids == g``)."""

    tokens: TokenBatch
    prompts: list[str]  # [B] prompt text of each sample
    texts: list[str]  # [B] decoded replies
    logprobs: torch.Tensor  # [B, T] float32, the engine's log-probs, 0 on padding
    finished: torch.Tensor  # [B] bool, ended with EOS or a stop string
    group_ids: torch.Tensor  # [B] int64

    @classmethod
    def from_samples(cls, samples: list[RolloutSample], pad_id: int, n: int) -> Rollout:
        """Pack engine samples (``n`` consecutive per prompt) into tensors."""
        if not samples or len(samples) % n:
            raise ValueError(f"{len(samples)} samples is not a positive multiple of n={n}")
        packed = pack_sequences([list(s.prompt_ids) for s in samples], [list(s.response_ids) for s in samples],
                                pad_id)
        width = packed.response_mask.shape[1]
        logprobs = torch.zeros((len(samples), width), dtype=torch.float32)
        for row, sample in enumerate(samples):
            logprobs[row, :len(sample.logprobs)] = torch.tensor(sample.logprobs, dtype=torch.float32)
        return cls(
            tokens=TokenBatch(packed.input_ids, packed.attention_mask, packed.prompt_width),
            prompts=[s.prompt for s in samples], texts=[s.text for s in samples], logprobs=logprobs,
            finished=torch.tensor([s.finished for s in samples], dtype=torch.bool),
            group_ids=torch.arange(len(samples)) // n)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def response_lengths(self) -> torch.Tensor:
        """``[B]`` number of response tokens of each sample."""
        return self.tokens.response_mask.sum(dim=1)


@dataclass(frozen=True)
class Batch:
    """A learner's training data for one or more PPO mini-batches."""

    tokens: TokenBatch
    loss_mask: torch.Tensor  # [B, T] response mask minus samples masked out (truncation)
    old_logprobs: torch.Tensor  # [B, T] behaviour policy, recomputed by the policy learner
    advantages: torch.Tensor  # [B, T]
    ref_logprobs: torch.Tensor | None = None  # [B, T] when the KL term is in the loss
    old_values: torch.Tensor | None = None  # [B, T] critic at rollout time (GAE)
    returns: torch.Tensor | None = None  # [B, T] critic targets (GAE)
    is_weights: torch.Tensor | None = None  # [B, T] min(pi_learner / pi_rollout, cap) (rollout_correction=tis)

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, rows: torch.Tensor) -> Batch:
        """The rows ``rows`` of every tensor."""
        values = {f.name: _take(getattr(self, f.name), rows) for f in fields(self) if f.name != "tokens"}
        return replace(self, tokens=self.tokens.select(rows), **values)

    def micro_batches(self, size: int) -> Iterator[Batch]:
        """Consecutive slices of at most ``size`` rows, their tokens :meth:`TokenBatch.trimmed` and every
        ``[b, T]`` tensor cut to the trimmed response width (the columns cut are padding in every row, out
        of every mask, so the loss is the same)."""
        for start in range(0, len(self), size):
            micro = self.select(torch.arange(start, min(start + size, len(self))))
            tokens = micro.tokens.trimmed()
            width = tokens.response_width
            values = {f.name: None if getattr(micro, f.name) is None else getattr(micro, f.name)[:, :width]
                      for f in fields(micro) if f.name != "tokens"}
            yield replace(micro, tokens=tokens, **values)

    @property
    def token_count(self) -> int:
        """Valid tokens of the loss mask (the ``token_mean`` denominator)."""
        return int(self.loss_mask.sum().item())

    @property
    def sequence_count(self) -> int:
        """Rows with at least one valid token (the ``seq_mean_*`` denominator)."""
        return int((self.loss_mask.sum(dim=1) > 0).sum().item())
