"""Batched sampling from a causal LM with a chat template (KV cache on, left padding, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SampledReply", "chat_prompt_ids", "sample_replies"]


@dataclass(frozen=True)
class SampledReply:
    """One sampled reply: its text, token ids, summed log-probability and whether it hit EOS."""

    text: str
    token_ids: list[int]
    logprob: float
    finished: bool


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each user prompt wrapped in the chat template with the assistant turn opened."""
    out = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out


@torch.no_grad()
def sample_replies(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
) -> list[SampledReply]:
    """Sample one reply per prompt. ``temperature == 0`` is greedy decoding."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    replies: list[SampledReply] = []
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for start in range(0, len(prompts), batch_size):
            ids = chat_prompt_ids(tokenizer, prompts[start:start + batch_size])
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            attention = torch.zeros((len(ids), width), dtype=torch.long)
            for row, seq in enumerate(ids):
                input_ids[row, width - len(seq):] = torch.tensor(seq)
                attention[row, width - len(seq):] = 1
            greedy = temperature == 0
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens, do_sample=not greedy,
                temperature=None if greedy else temperature, top_p=None if greedy else top_p, top_k=None,
                eos_token_id=eos, pad_token_id=pad, use_cache=True,
                return_dict_in_generate=True, output_scores=True,
            )
            new = out.sequences[:, width:].cpu()
            logps = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()
            for row in range(new.shape[0]):
                tokens = new[row].tolist()
                finished = eos in tokens
                length = tokens.index(eos) + 1 if finished else len(tokens)
                kept = tokens[:length]
                lp = float(logps[row, torch.arange(length), torch.tensor(kept)].sum()) if kept else 0.0
                text = tokenizer.decode([t for t in kept if t != eos], skip_special_tokens=True).strip()
                replies.append(SampledReply(text=text, token_ids=kept, logprob=lp, finished=finished))
    finally:
        torch.random.set_rng_state(generator_state)
        model.train(was_training)
    return replies
