"""A ``.gguf`` file as ``model.name_or_path``: dequantized once into a cached HF folder that plain
transformers opens, with the model's own chat template and pad == eos == ``<|im_end|>``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlhf.core.errors import UserError
from rlhf.models.gguf import gguf_cache_folder, materialize_gguf
from rlhf.models.loader import resolve_model_path

pytestmark = pytest.mark.real


def test_gguf_converts_once_into_a_plain_transformers_folder(smollm2_gguf: Path, smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert smollm2 == gguf_cache_folder(smollm2_gguf)
    weights = smollm2 / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert Path(resolve_model_path(str(smollm2_gguf))) == smollm2
    assert weights.stat().st_mtime_ns == stamp, "a second use converted the file again"
    assert not [p for p in smollm2.parent.iterdir() if p.name.startswith(".")], "a staging folder was left behind"

    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.tie_word_embeddings and "quantization_config" not in model.config.to_dict()
    assert tok.eos_token == tok.pad_token == "<|im_end|>" and model.config.pad_token_id == tok.eos_token_id
    batch = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                    add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(batch["input_ids"][0]).rstrip().endswith("<|im_start|>assistant")
    out = model.generate(**batch, max_new_tokens=20, do_sample=False)
    reply = tok.decode(out[0, batch["input_ids"].shape[1]:])
    assert "Paris" in reply and reply.endswith("<|im_end|>")


def test_missing_gguf_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        materialize_gguf(tmp_path / "absent.gguf")
    assert not (Path(os.environ["RLHF_CACHE"]) / "gguf" / "absent").exists()
