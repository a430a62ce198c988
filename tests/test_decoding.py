"""The rollout engine's decoding: truncation and sampling as pure functions, and the decode loop against
``model.generate`` on the tiny model, with rows finishing at different steps."""

from __future__ import annotations

import copy

import pytest
import torch

from rlhf.models.config import TinyModelConfig
from rlhf.rollout import SamplingParams, decoding
from rlhf.rollout.decoding import decode, next_tokens, truncate_logits

PROMPTS = ["Hi, where is my order #A12345?", "Can I return the desk lamp?", "Thanks!",
           "My invoice shows the wrong address and the parcel went back to the depot; what now?"]


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 2.5]])
    kept = torch.isfinite(truncate_logits(logits, top_k=2, top_p=1.0))
    assert kept.tolist() == [[False, True, False, False, True]]


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()[:, [2, 0, 3, 1]]  # shuffled: 0.15, 0.5, 0.05, 0.3
    assert torch.isfinite(truncate_logits(logits, 0, top_p=0.8)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(truncate_logits(logits, 0, top_p=0.81)).tolist() == [[True, True, False, True]]
    assert torch.isfinite(truncate_logits(logits, 0, top_p=0.01)).tolist() == [[False, True, False, False]]


def test_sampling_follows_the_tempered_distribution():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0, -30.0]).repeat(40_000, 1)
    params = SamplingParams(temperature=0.7)
    drawn = next_tokens(logits, params, torch.Generator().manual_seed(0))
    freq = torch.bincount(drawn, minlength=5).float() / len(drawn)
    expected = torch.softmax(logits[0] / 0.7, -1)
    assert (freq - expected).abs().max() < 0.01, (freq, expected)


def test_truncated_tokens_are_never_drawn():
    logits = torch.randn(2_000, 50, generator=torch.Generator().manual_seed(1))
    drawn = next_tokens(logits, SamplingParams(temperature=1.0, top_k=3), torch.Generator().manual_seed(2))
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == drawn[:, None]).any(-1).all()
    greedy = next_tokens(logits, SamplingParams(temperature=1.0, top_k=1), torch.Generator().manual_seed(2))
    assert torch.equal(greedy, logits.argmax(-1))


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from rlhf.models.generation import chat_prompt_ids
    from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path

    path = resolve_model_path("tiny", TinyModelConfig())
    torch.manual_seed(0)
    model, tokenizer = load_model(path, "reference", device="cpu").eval(), load_tokenizer(path)
    return model, tokenizer, chat_prompt_ids(tokenizer, PROMPTS)


def _stopping_token(model, tokenizer, ids) -> int:
    """A token that greedy decoding emits early in some rows and late or never in others."""
    free = decode(model, tokenizer, ids, SamplingParams(temperature=0, max_new_tokens=12), None)
    firsts: dict[int, list[int]] = {}
    for row, reply in enumerate(free):
        for step, token in enumerate(reply.tokens):
            first = firsts.setdefault(token, [99] * len(free))
            first[row] = min(first[row], step)
    return max(firsts, key=lambda t: len(set(firsts[t])))


@pytest.mark.parametrize("fast", [True, False], ids=["decode-step", "model-forward"])
@pytest.mark.parametrize("share", [0.0, 0.125, 2.0], ids=["drop-each", "drop-in-bulk", "never-drop"])
def test_greedy_decode_matches_generate_while_rows_end_apart(model_and_tokenizer, monkeypatch, share, fast):
    from rlhf.rollout import decode_step

    model, tokenizer, ids = model_and_tokenizer
    tokenizer = copy.copy(tokenizer)
    eos = _stopping_token(model, tokenizer, ids)
    tokenizer.eos_token_id = eos
    monkeypatch.setattr(decoding, "COMPACT_SHARE", share)
    assert decode_step.supports(model)
    if not fast:
        monkeypatch.setattr(decode_step, "supports", lambda model: False)
    mine = decode(model, tokenizer, ids, SamplingParams(temperature=0, max_new_tokens=12), None)
    ends = {len(r.tokens) for r in mine}
    assert len(ends) >= 2 and any(r.finished for r in mine), "rows end at different steps"

    width = max(map(len, ids))
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(s)) + s for s in ids])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(s) for s in ids])[:, None]).long()
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                         eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                         output_logits=True)
    for row, reply in enumerate(mine):
        theirs = out.sequences[row, width:].tolist()
        theirs = theirs[:theirs.index(eos) + 1] if eos in theirs else theirs
        assert reply.tokens == theirs
        assert reply.finished == (eos in theirs)
        logp = torch.log_softmax(torch.stack(out.logits, 1)[row, :len(theirs)].float(), -1)
        assert torch.allclose(torch.tensor(reply.logprobs), logp.gather(-1, torch.tensor(theirs)[:, None])[:, 0],
                              atol=1e-4)


def _random_model(architecture: str, **extra):
    """A small random model of ``architecture`` with grouped KV heads (8 query heads over 2)."""
    import transformers

    config_class = getattr(transformers, f"{architecture}Config")
    config = config_class(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128, **extra)
    torch.manual_seed(3)
    return getattr(transformers, f"{architecture}ForCausalLM")(config).eval()


@pytest.mark.parametrize("architecture, extra", [
    ("Llama", {}), ("Llama", {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}),
    ("Llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}), ("Qwen2", {}),
], ids=["llama-gqa", "llama-biases-tied", "llama-linear-rope", "qwen2"])
def test_decode_step_gives_the_models_logits(architecture, extra):
    from transformers import DynamicCache

    from rlhf.rollout.decode_step import GROW, KVDecoder, supports

    model = _random_model(architecture, **extra)
    assert supports(model)
    generator = torch.Generator().manual_seed(4)
    rows, width = 5, 7
    ids = torch.randint(3, 97, (rows, width), generator=generator)
    mask = torch.ones(rows, width + GROW + 8, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    mask[3, :5] = 0
    positions = (mask[:, :width].cumsum(-1) - 1).clamp(min=0)
    theirs, mine = DynamicCache(config=model.config), DynamicCache(config=model.config)
    with torch.no_grad():
        for cache in (theirs, mine):
            model(input_ids=ids, attention_mask=mask[:, :width], position_ids=positions, past_key_values=cache,
                  use_cache=True)
        fast = KVDecoder(model, mine, width)
        position, keep = positions[:, -1], torch.arange(rows)
        for step in range(GROW + 8):  # past the first buffer's end
            if step == 3:  # rows 1 and 3 leave the batch
                keep = torch.tensor([0, 2, 4])
                theirs.batch_select_indices(keep)
                fast.select(keep)
                mask, position = mask[keep], position[keep]
            tokens = torch.randint(3, 97, (len(keep),), generator=generator)
            position = position + 1
            expected = model(input_ids=tokens[:, None], attention_mask=mask[:, :width + step + 1],
                             position_ids=position[:, None], past_key_values=theirs, use_cache=True).logits[:, -1]
            got = fast.step(tokens, position, mask[:, :width + step + 1])
            assert torch.allclose(got, expected, atol=1e-5), (step, (got - expected).abs().max())


def test_decode_step_leaves_other_architectures_to_the_model():
    from rlhf.rollout.decode_step import supports

    assert not supports(_random_model("Mistral", sliding_window=4))
    assert not supports(_random_model("Qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=0))
    assert not supports(_random_model("Llama", hidden_act="gelu"))


def test_a_repeated_prompt_is_prefilled_once(model_and_tokenizer):
    model, tokenizer, ids = model_and_tokenizer
    prefill_rows: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: prefill_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    params = SamplingParams(temperature=0, max_new_tokens=10)
    try:
        repeated = decode(model, tokenizer, [seq for seq in ids for _ in range(3)], params, None)
    finally:
        hook.remove()
    assert prefill_rows == [len(ids)]  # one prompt pass over the distinct prompts; the steps take the fast path
    once = decode(model, tokenizer, ids, params, None)
    for row, reply in enumerate(repeated):
        assert reply.tokens == once[row // 3].tokens
        assert torch.allclose(torch.tensor(reply.logprobs), torch.tensor(once[row // 3].logprobs), atol=1e-5)
