"""One loader for policy, reference, reward and critic models.

A model is named by a hub id, a local path (a stage output folder works: its ``model/`` is used), a
``.gguf`` file (dequantized once into the cache by :mod:`rlhf.models.gguf`) or ``tiny`` (built by
:mod:`rlhf.models.tiny`). Policy and reference load as causal LMs; reward and critic
as sequence classifiers with one output (a critic is initialised from the reward model it is given).
LoRA adapters come from PEFT. ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from rlhf.core.errors import UserError
from rlhf.models.config import TINY, LoraSettings, TinyModelConfig

__all__ = ["ModelRole", "load_model", "load_tokenizer", "pick_device", "resolve_model_path", "torch_dtype"]

ModelRole = Literal["policy", "reference", "reward", "critic"]


def pick_device(device: str) -> torch.device:
    """Resolve 'auto' to CUDA when available, else CPU; refuse 'cuda' on a machine without it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("model.device=cuda but no CUDA device is visible; use model.device=auto or cpu")
    return torch.device(device)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype for a config name."""
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def resolve_model_path(name_or_path: str, tiny: TinyModelConfig | None = None) -> str:
    """A local folder to load: builds the tiny model, converts a GGUF file, maps a stage folder to its
    ``model/`` subfolder and downloads a hub id into the Hugging Face cache."""
    if name_or_path == TINY:
        from rlhf.models.tiny import build_tiny_model

        return str(build_tiny_model(tiny or TinyModelConfig()))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        from rlhf.models.gguf import materialize_gguf

        return str(materialize_gguf(path))
    if path.exists():
        if (path / "model" / "config.json").is_file():
            return str(path / "model")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UserError(f"{path} holds no model (no config.json); point model.name_or_path at a model folder")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise UserError(f"model path {name_or_path} does not exist; check model.name_or_path (a folder, a .gguf "
                        "file, 'tiny' or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct)")
    return _hub_snapshot(name_or_path)


def _hub_snapshot(repo_id: str) -> str:
    """The local folder of a hub model (downloaded once into the Hugging Face cache), so that it is an input
    with a content hash like any folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"])
    except (HfHubHTTPError, OSError, ValueError) as err:  # offline, unknown or gated repo, bad id
        raise UserError(f"hub model {repo_id} could not be downloaded ({type(err).__name__}); check the id and the "
                        "network, or point model.name_or_path at a local folder or .gguf file") from None


def load_tokenizer(path: str):
    """The tokenizer of a model, with a pad token (EOS when the model has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _lora_config(lora: LoraSettings, task_type: str):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type=task_type)


def load_model(
    path: str,
    role: ModelRole,
    dtype: str = "float32",
    device: str = "auto",
    lora: LoraSettings | None = None,
):
    """Load a model for ``role``; reference models come frozen in eval mode.

    ``lora`` (when enabled, for trainable roles) wraps the model with fresh PEFT adapters. A folder that
    holds a saved adapter (``adapter_config.json``) loads its base and merges the adapter.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = {"dtype": torch_dtype(dtype), "trust_remote_code": False}
    adapter = (Path(path) / "adapter_config.json").is_file()
    if role in ("policy", "reference"):
        if adapter:
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        task_type = "CAUSAL_LM"
    else:
        if adapter:
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        if model.config.pad_token_id is None:
            tok = load_tokenizer(path)
            model.config.pad_token_id = tok.pad_token_id
        task_type = "SEQ_CLS"
    model.to(pick_device(device))
    if role == "reference":
        model.eval()
        model.requires_grad_(False)
    elif lora is not None and lora.enabled:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(lora, task_type))
    return model
