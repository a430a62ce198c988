"""Prompt+response token layout and the per-token log-probs of a causal LM over it.

Layout of a batch of ``B`` sequences (the one every rollout engine, learner and reference model uses):

    input_ids      [B, P + T]   prompt left-padded to width P, then the response right-padded to width T
    attention_mask [B, P + T]   1 on real prompt and response tokens
    response_mask  [B, T]       1 on real response tokens (EOS included)

Position ids are ``cumsum(attention_mask) - 1`` (0 on padding), which is what ``generate`` uses for
left-padded prompts, so a full forward pass here reproduces the positions seen while sampling. The
log-prob of response token ``t`` comes from the logits at position ``P + t - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PackedSequences", "pack_sequences", "position_ids", "response_logits", "response_logprobs"]


@dataclass(frozen=True)
class PackedSequences:
    """Padded token tensors of a batch (shapes in the module docstring)."""

    input_ids: torch.Tensor  # [B, P + T] int64
    attention_mask: torch.Tensor  # [B, P + T] int64
    response_mask: torch.Tensor  # [B, T] int64
    prompt_width: int  # P

    @property
    def response_ids(self) -> torch.Tensor:
        """The response part of ``input_ids``, ``[B, T]``."""
        return self.input_ids[:, self.prompt_width:]


def pack_sequences(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> PackedSequences:
    """Left-pad prompts and right-pad responses into one ``[B, P + T]`` batch."""
    if len(prompt_ids) != len(response_ids) or not prompt_ids:
        raise ValueError(f"need the same non-zero number of prompts and responses, got "
                         f"{len(prompt_ids)} and {len(response_ids)}")
    if any(len(p) == 0 for p in prompt_ids) or any(len(r) == 0 for r in response_ids):
        raise ValueError("every prompt and every response needs at least one token")
    width_p = max(len(p) for p in prompt_ids)
    width_t = max(len(r) for r in response_ids)
    batch = len(prompt_ids)
    input_ids = torch.full((batch, width_p + width_t), pad_id, dtype=torch.long)
    attention = torch.zeros((batch, width_p + width_t), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[row, width_p - len(prompt):width_p] = torch.tensor(prompt, dtype=torch.long)
        input_ids[row, width_p:width_p + len(response)] = torch.tensor(response, dtype=torch.long)
        attention[row, width_p - len(prompt):width_p + len(response)] = 1
    return PackedSequences(input_ids, attention, attention[:, width_p:].clone(), width_p)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """``cumsum(mask) - 1`` with 0 on padding: the positions ``generate`` gives left-padded prompts."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                    temperature: float = 1.0) -> torch.Tensor:
    """Logits that predict each response token, divided by ``temperature``: ``[B, T, V]``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    # The LM head runs on the positions that predict response tokens only (not on the prompt's).
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                use_cache=False, logits_to_keep=input_ids.shape[1] - prompt_width + 1)
    logits = out.logits[:, :-1]
    return logits / temperature if temperature != 1.0 else logits


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                      temperature: float = 1.0, return_logits: bool = False):
    """Per-token log-probs of the response part, ``[B, T]`` in fp32, zero on response padding.

    With ``return_logits`` also returns the ``[B, T, V]`` logits (for an entropy term).
    """
    logits = response_logits(model, input_ids, attention_mask, prompt_width, temperature)
    targets = input_ids[:, prompt_width:]
    logits32 = logits.float()
    picked = logits32.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logp = (picked - torch.logsumexp(logits32, dim=-1)) * attention_mask[:, prompt_width:].to(torch.float32)
    return (logp, logits) if return_logits else logp
