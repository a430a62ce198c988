"""The rollout engine protocol, the token layout, and the transformers engine on the tiny model."""

from __future__ import annotations

import pytest
import torch

from rlhf.models.config import TinyModelConfig
from rlhf.rollout import (
    RolloutEngine,
    RolloutSample,
    SamplingParams,
    TransformersRolloutEngine,
    pack_sequences,
    response_logprobs,
)

PROMPTS = ["Hi, where is my order #A12345?", "Can I return the desk lamp I bought last week?"]


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from rlhf.models.loader import resolve_model_path

    return resolve_model_path("tiny", TinyModelConfig())


@pytest.fixture(scope="module")
def engine(tiny_path) -> TransformersRolloutEngine:
    torch.manual_seed(0)
    return TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu", batch_size=3)


def test_sampling_params_validate_and_map_to_vllm():
    with pytest.raises(ValueError, match="n must be >= 1"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="stop must be a sequence"):
        SamplingParams(stop="###")  # type: ignore[arg-type]
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, top_k=0, max_new_tokens=12, stop=("\n\n",))
    assert params.vllm_kwargs(seed=5) == {"n": 2, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "max_tokens": 12,
                                          "stop": ["\n\n"], "seed": 5, "logprobs": 0}
    assert SamplingParams(temperature=0).logprob_temperature == 1.0


def test_sample_needs_one_logprob_per_token():
    with pytest.raises(ValueError, match="one log-prob per generated token"):
        RolloutSample("p", "t", (1, 2), (3, 4), (-0.1,), True)


def test_pack_sequences_layout():
    packed = pack_sequences([[5, 6], [7]], [[8], [9, 10, 11]], pad_id=0)
    assert packed.prompt_width == 2
    assert packed.input_ids.tolist() == [[5, 6, 8, 0, 0], [0, 7, 9, 10, 11]]
    assert packed.attention_mask.tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert packed.response_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="at least one token"):
        pack_sequences([[1]], [[]], pad_id=0)


def test_engine_meets_the_protocol(engine):
    assert isinstance(engine, RolloutEngine)


def test_generate_is_prompt_major_and_seeded(engine):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10)
    first = engine.generate(PROMPTS, params, seed=7)
    assert [s.prompt for s in first] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert first == engine.generate(PROMPTS, params, seed=7)
    assert [s.response_ids for s in first] != [s.response_ids for s in engine.generate(PROMPTS, params, seed=8)]
    eos = engine.tokenizer.eos_token_id
    for sample in first:
        assert len(sample.logprobs) == len(sample.response_ids) <= 10
        assert sample.finished == (sample.response_ids[-1] == eos)
        assert eos not in sample.response_ids[:-1]
        assert all(lp <= 0 for lp in sample.logprobs)


def test_generation_does_not_touch_the_callers_random_state(engine):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=4), seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_recompute_the_sampling_logprobs(engine, temperature):
    samples = engine.generate(PROMPTS, SamplingParams(n=2, temperature=temperature, max_new_tokens=12), seed=3)
    again = engine.logprobs([list(s.prompt_ids) for s in samples], [list(s.response_ids) for s in samples],
                            temperature=temperature)
    for sample, row in zip(samples, again):
        assert torch.allclose(torch.tensor(row), torch.tensor(sample.logprobs), atol=1e-4)


def test_greedy_decoding_picks_the_argmax(engine):
    (sample,) = engine.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=6), seed=0)
    packed = pack_sequences([list(sample.prompt_ids)], [list(sample.response_ids)], engine.tokenizer.pad_token_id)
    logits = engine.model(input_ids=packed.input_ids, attention_mask=packed.attention_mask).logits
    argmax = logits[0, packed.prompt_width - 1:-1].argmax(-1)
    assert argmax.tolist() == list(sample.response_ids)


def test_stop_strings_end_the_reply(engine):
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    free = engine.generate(PROMPTS[:1], params, seed=0)[0]
    assert len(free.text) >= 6, "the seeded sample is long enough to cut"
    stop = free.text[3:6]
    (cut,) = engine.generate(PROMPTS[:1], SamplingParams(temperature=1.0, max_new_tokens=16, stop=(stop,)), seed=0)
    assert cut.finished
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert len(cut.response_ids) < len(free.response_ids)


def test_load_weights_replaces_the_model(tiny_path, engine):
    other = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    with torch.no_grad():
        for param in other.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    samples = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8), seed=1)
    ids = ([list(s.prompt_ids) for s in samples], [list(s.response_ids) for s in samples])
    before = engine.logprobs(*ids)
    target = other.logprobs(*ids)
    assert before != target
    fresh = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    loaded = fresh.load_weights(other.model.state_dict())
    assert loaded == len(other.model.state_dict())
    assert fresh.logprobs(*ids) == target


def test_load_weights_refuses_unknown_names_and_shapes(engine):
    with pytest.raises(ValueError, match="names the model does not know"):
        engine.load_weights({"base_model.model.lm_head.weight": torch.zeros(1)})
    name, param = next(iter(engine.model.named_parameters()))
    with pytest.raises(ValueError, match="has shape"):
        engine.load_weights([(name, torch.zeros(param.shape[0] + 1))])


def test_response_logprobs_zero_on_padding(engine):
    packed = pack_sequences([[1, 5], [1]], [[7], [8, 9]], engine.tokenizer.pad_token_id)
    logp = response_logprobs(engine.model, packed.input_ids, packed.attention_mask, packed.prompt_width)
    assert logp.shape == (2, 2)
    assert logp[0, 1] == 0
    assert (logp[1] < 0).all()


def test_the_models_generation_config_never_shapes_the_samples(tiny_path, engine, tmp_path):
    """A model folder whose generation_config.json asks for top-k 1 and a repetition penalty samples exactly
    what the same weights sample without it: the configured SamplingParams alone decide."""
    import json
    import shutil

    folder = tmp_path / "opinionated"
    shutil.copytree(tiny_path, folder)
    config = json.loads((folder / "generation_config.json").read_text()) if (folder / "generation_config.json").is_file() else {}
    config.update(top_k=1, repetition_penalty=3.0, do_sample=False, no_repeat_ngram_size=2, min_new_tokens=10)
    (folder / "generation_config.json").write_text(json.dumps(config))
    opinionated = TransformersRolloutEngine.from_pretrained(str(folder), device="cpu", batch_size=3)
    assert opinionated.model.generation_config.top_k == 1  # the file was read
    params = SamplingParams(n=3, temperature=1.0, top_k=40, max_new_tokens=16)
    mine = opinionated.generate(PROMPTS, params, seed=4)
    plain = engine.generate(PROMPTS, params, seed=4)
    assert [s.response_ids for s in mine] == [s.response_ids for s in plain]
    assert len({s.response_ids for s in mine[:3]}) > 1  # sampled at temperature 1, not top-k 1
    assert opinionated.model.generation_config.top_k == 1  # restored after generation
