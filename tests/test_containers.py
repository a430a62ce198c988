"""Trimmed slices of a rollout batch: the learners and the reference read each micro-batch without the
columns that are padding in all its rows, and get the same per-token log-probs as from the full width."""

from __future__ import annotations

import pytest
import torch

from rlhf.models.config import TinyModelConfig
from rlhf.rollout.containers import Batch, TokenBatch, pad_columns
from rlhf.rollout.sequences import pack_sequences, response_logprobs

PROMPTS = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15], [16, 17]]
REPLIES = [[20, 21], [22, 23, 24, 25, 26, 27, 28], [29], [30, 31, 32]]


def _tokens() -> TokenBatch:
    packed = pack_sequences(PROMPTS, REPLIES, pad_id=0)
    return TokenBatch(packed.input_ids, packed.attention_mask, packed.prompt_width)


def test_trimming_drops_only_columns_that_are_padding_in_every_row():
    tokens = _tokens()
    assert (tokens.prompt_width, tokens.response_width) == (6, 7)
    first, second = list(tokens.chunks(2))
    assert (first.prompt_width, first.response_width) == (6, 7)  # the longest prompt and reply are in it
    last_two = tokens.select(torch.tensor([2, 3])).trimmed()
    assert (last_two.prompt_width, last_two.response_width) == (3, 3)
    assert second.input_ids.tolist() == last_two.input_ids.tolist()
    assert last_two.lists() == (PROMPTS[2:], REPLIES[2:])
    assert pad_columns(last_two.response_mask, 7).tolist() == tokens.response_mask[2:].tolist()


def test_micro_batches_cut_every_per_token_tensor_to_the_trimmed_width():
    tokens = _tokens()
    mask = tokens.response_mask.float()
    batch = Batch(tokens, mask, torch.randn(4, 7) * mask, torch.randn(4, 7) * mask, returns=torch.ones(4, 7))
    micro = list(batch.micro_batches(2))[1]
    assert micro.tokens.response_width == 3
    assert micro.loss_mask.shape == micro.old_logprobs.shape == micro.returns.shape == (2, 3)
    assert micro.token_count == int(mask[2:].sum())
    assert torch.equal(pad_columns(micro.advantages, 7), batch.advantages[2:])


def test_a_trimmed_slice_scores_like_the_full_width():
    from transformers import AutoModelForCausalLM

    from rlhf.models.loader import resolve_model_path

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny", TinyModelConfig())).eval()
    tokens = _tokens()
    with torch.no_grad():
        full = response_logprobs(model, tokens.input_ids, tokens.attention_mask, tokens.prompt_width)
        parts = [pad_columns(response_logprobs(model, c.input_ids, c.attention_mask, c.prompt_width), 7)
                 for c in tokens.chunks(2)]
    assert torch.cat(parts) == pytest.approx(full, abs=1e-5)
    assert (full[2:, 3:] == 0).all()
