"""GGUF files as model inputs: dequantized once into a Hugging Face folder in the cache.

transformers reads a GGUF file (``from_pretrained(folder, gguf_file=name)``) but the model it returns is
marked as quantized and refuses ``save_pretrained``, and every stage, Ray actor and DeepSpeed learner
would dequantize it again. So a ``.gguf`` named by ``model.name_or_path`` is converted once: its config
loses the quantization entry, a clean float32 model takes the dequantized state dict, and the folder
(weights, tokenizer with its chat template, generation config, a model card) lands in
``$RLHF_CACHE/gguf/<stem>-<sha256 prefix>/`` through a staging folder and a rename, so concurrent
loaders never see half a folder and a changed file gets a new folder.
"""

from __future__ import annotations

from pathlib import Path

from rlhf.core.artifacts import build_cache_folder, sha256_file
from rlhf.core.errors import UserError
from rlhf.core.paths import cache_root

__all__ = ["gguf_cache_folder", "materialize_gguf"]


def gguf_cache_folder(gguf_file: Path) -> Path:
    """The cache folder a GGUF file converts into (keyed by its name and content hash)."""
    return cache_root() / "gguf" / f"{gguf_file.stem}-{sha256_file(gguf_file)[:16]}"


def materialize_gguf(gguf_file: str | Path) -> Path:
    """The HF folder for ``gguf_file``, converting it on first use; later calls return the cached folder."""
    gguf_file = Path(gguf_file).expanduser().resolve()
    if not gguf_file.is_file():
        raise UserError(f"GGUF file {gguf_file} does not exist; check model.name_or_path "
                        "(scripts/fetch-smollm2.sh prepares the SmolLM2 example)")
    target = gguf_cache_folder(gguf_file)
    if (target / "config.json").is_file():
        return target
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as err:
        raise UserError("reading a .gguf model needs the 'gguf' package; run: pip install gguf") from err
    return build_cache_folder(target, lambda staging: _convert(gguf_file, staging))


def _convert(gguf_file: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = str(gguf_file.parent), gguf_file.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    # Tied models carry no separate lm_head in the file; anything else missing is a conversion error.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UserError(f"{gguf_file.name}: the dequantized weights do not fit {type(model).__name__} "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}); this GGUF architecture is not supported")
    if config.tie_word_embeddings:
        model.tie_weights()
    del quantized
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(
        "---\nlibrary_name: transformers\ntags:\n- rlhf-pipeline\n- gguf-dequantized\n---\n\n"
        f"# {gguf_file.stem}\n\nDequantized to float32 from the GGUF file `{gguf_file.name}` "
        f"(sha256 `{sha256_file(gguf_file)}`) by rlhf-pipeline. Loads with "
        "`AutoModelForCausalLM.from_pretrained(folder)`.\n")
