"""Sampled decoding for the transformers rollout engine: one forward pass a token over a KV cache, with the
rows that finished dropped from the batch as it runs.

Why not ``model.generate``: a batch of sampled replies is as long as its longest, and ``generate`` keeps every
finished row in the forward pass, and in the KV cache it extends by concatenation each step, until the last
one ends. The quickstart's replies average 37 tokens under a 96-token cap, so most of a batch's compute went
to rows already done: ``generate`` was 2.9x slower on the quickstart's sampling
(``benchmarks/generation_speed.py``). The library's own continuous batching (``generate_batch``) is built for
CUDA and ran 3x slower than ``generate`` on CPU. vLLM does the same job on GPUs
(:mod:`rlhf.rollout.vllm_engine`).

What stays the model's: the prompt's forward pass and its cache (``DynamicCache``), and every decoding step of
an architecture :mod:`rlhf.rollout.decode_step` does not cover (Llama and Qwen2 take its faster step over the
same cache); rows leave the cache through its ``batch_select_indices``. What is here: the sampling
(temperature, top-k, then top-p, as in ``generate`` and vLLM), the per-row stop checks, and the bookkeeping
of who is still running. A prompt that appears several times in the batch (the ``n`` replies of GRPO or
RLOO) is run through the prompt pass once and its cache copied to its rows, as vLLM's prefix caching does.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from rlhf.rollout.types import SamplingParams

__all__ = ["Decoded", "decode", "next_tokens", "truncate_logits"]

# Finished rows stay in the batch (fed padding, their outputs ignored) until they are this share of it:
# dropping a row copies the whole cache, so it is done in bulk.
COMPACT_SHARE = 0.125


@dataclass(frozen=True)
class Decoded:
    """One row's reply: its tokens (EOS included when it ended on one), their log-probs, and whether it
    ended on EOS or a stop string (``False``: cut at ``max_new_tokens``)."""

    tokens: list[int]
    logprobs: list[float]
    finished: bool


def truncate_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """``logits`` with every token outside the top ``top_k`` (0: off), then outside the smallest set whose
    probability reaches ``top_p`` (1: off), set to ``-inf``. The most likely token always stays."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # mass of the tokens ranked above
        drop = before >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_tokens(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``logits`` (rows x vocab): the argmax when greedy, else a draw from
    ``softmax(truncate(logits / temperature))`` by inverting its cumulative sum with one uniform per row."""
    if params.greedy:
        return logits.argmax(-1)
    probs = truncate_logits(logits.float() / params.temperature, params.top_k, params.top_p).softmax(-1)
    cdf = probs.cumsum(-1)
    u = torch.rand((logits.shape[0], 1), generator=generator, device=logits.device) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, u).squeeze(-1).clamp(max=logits.shape[-1] - 1)
    # A uniform that lands exactly on a boundary of a zero-probability token would pick it; take the argmax.
    missed = probs.gather(-1, picked[:, None]).squeeze(-1) == 0
    if missed.any():
        picked[missed] = probs[missed].argmax(-1)
    return picked


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class _ModelSteps:
    """Decoding steps through the model's own forward over its ``DynamicCache`` (the interface of
    :class:`rlhf.rollout.decode_step.KVDecoder`, for the architectures it does not cover)."""

    def __init__(self, model, cache) -> None:
        self.model, self.cache = model, cache

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=positions[:, None],
                          past_key_values=self.cache, use_cache=True).logits[:, -1]


@torch.no_grad()
def decode(model, tokenizer, ids: list[list[int]], params: SamplingParams,
           generator: torch.Generator | None) -> list[Decoded]:
    """Sample one reply for each prompt in ``ids`` (token ids, unpadded) under ``params``.

    Prompts are left-padded into one batch; each step feeds every running row its last token. A row ends on
    EOS, on a stop string appearing in its decoded tail, or at ``params.max_new_tokens``. Log-probs are those
    of the raw logits divided by ``params.logprob_temperature``, before any truncation.
    """
    from transformers import DynamicCache

    from rlhf.rollout.decode_step import KVDecoder, supports

    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, width = len(ids), max(len(seq) for seq in ids)
    distinct = {tuple(seq): None for seq in ids}  # each prompt once, in first-seen order
    slot = {seq: i for i, seq in enumerate(distinct)}
    of_row = torch.tensor([slot[tuple(seq)] for seq in ids], device=device)
    input_ids = torch.tensor([[pad] * (width - len(seq)) + list(seq) for seq in distinct], device=device)
    prompt_mask = torch.tensor([[0] * (width - len(seq)) + [1] * len(seq) for seq in distinct], device=device)
    mask = torch.cat([prompt_mask[of_row], prompt_mask.new_zeros((rows, params.max_new_tokens))], dim=1)
    position = mask[:, :width].sum(-1) - 1
    cache = DynamicCache(config=model.config)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    logits = model(input_ids=input_ids, attention_mask=prompt_mask,
                   position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0), past_key_values=cache, use_cache=True,
                   **extra).logits[:, -1]
    if len(distinct) < rows:  # copy each prompt's cache and last logits to its rows
        cache.batch_select_indices(of_row)
        logits = logits[of_row]
    steps = KVDecoder(model, cache, width) if supports(model) else _ModelSteps(model, cache)

    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    finished = [False] * rows
    batch_rows = list(range(rows))   # the prompt row of each row of the running batch
    running = [True] * rows          # per batch row: still generating
    stop_tail = max((len(s) for s in params.stop), default=0) + 2
    for step in range(params.max_new_tokens):
        picked = next_tokens(logits, params, generator)
        chosen = torch.log_softmax(logits.float() / params.logprob_temperature, -1).gather(-1, picked[:, None])
        for index, (token, logp) in enumerate(zip(picked.tolist(), chosen.squeeze(-1).tolist())):
            if not running[index]:
                continue
            row = batch_rows[index]
            tokens[row].append(token)
            logprobs[row].append(logp)
            if token == eos or (params.stop and any(
                    s in tokenizer.decode(tokens[row][-stop_tail:], skip_special_tokens=True) for s in params.stop)):
                finished[row] = True
                running[index] = False
        live = sum(running)
        if live == 0 or step == params.max_new_tokens - 1:
            break
        if len(running) - live >= max(1, COMPACT_SHARE * len(running)):
            keep = torch.tensor([i for i, alive in enumerate(running) if alive], device=device)
            steps.select(keep)
            mask, picked, position = mask[keep], picked[keep], position[keep]
            batch_rows = [batch_rows[i] for i in keep.tolist()]
            running = [True] * live
        else:
            picked = torch.where(torch.tensor(running, device=device), picked, pad)
        position = position + 1
        mask[:, width + step] = 1
        logits = steps.step(picked, position, mask[:, :width + step + 1])
    return [Decoded(tokens[row], logprobs[row], finished[row]) for row in range(rows)]
