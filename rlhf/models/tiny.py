"""The tiny-model factory: a Llama-style causal LM of a few million parameters and a BPE tokenizer
trained locally on demo-world text, with a chat template. Deterministic from the config (seed included)
and cached by content key, so every test and stage that asks for the same shape gets the same files.

The result is an ordinary transformers folder: every loader (policy, reference, reward, critic) reads it
exactly as it reads a hub checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rlhf.core.artifacts import build_cache_folder
from rlhf.core.paths import cache_root
from rlhf.models.config import TinyModelConfig

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tiny_model", "tiny_model_path"]

FACTORY_VERSION = 1
SPECIAL_TOKENS = {
    "pad_token": "<|pad|>",
    "bos_token": "<|bos|>",
    "eos_token": "<|end|>",
    "unk_token": "<|unk|>",
}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

# Each message is "<|role|>\n{content}<|end|>\n"; the generation prompt opens an assistant turn.
# `{% generation %}` marks assistant tokens so TRL can train on completions only.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _key(cfg: TinyModelConfig) -> str:
    payload = json.dumps({"factory": FACTORY_VERSION, **cfg.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tiny_model_path(cfg: TinyModelConfig) -> Path:
    """Where the tiny model for ``cfg`` lives once built."""
    return cache_root() / "tiny" / _key(cfg)


def _tokenizer_corpus(cfg: TinyModelConfig) -> list[str]:
    from rlhf.world.demo import generate_prompts, sft_corpus

    rows = sft_corpus(cfg.tokenizer_corpus_size, seed=cfg.seed)
    texts = [row["prompt"] + "\n" + row["completion"] for row in rows]
    texts += [p.text for p in generate_prompts(cfg.tokenizer_corpus_size, seed=cfg.seed + 1)]
    return texts


def _train_tokenizer(cfg: TinyModelConfig, texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = list(SPECIAL_TOKENS.values()) + ROLE_TOKENS
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS, additional_special_tokens=ROLE_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.model_max_length = cfg.max_position_embeddings
    return fast


def build_tiny_model(cfg: TinyModelConfig) -> Path:
    """Build (or find cached) the tiny model and tokenizer for ``cfg``; returns the folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    target = tiny_model_path(cfg)
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(cfg, _tokenizer_corpus(cfg))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "tiny_config.json").write_text(json.dumps(cfg.model_dump(), indent=2, sort_keys=True))

    return build_cache_folder(target, write)
