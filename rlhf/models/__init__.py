"""Model loading (policy, reference, reward, critic) and the tiny-model factory."""

from rlhf.models.config import LoraSettings, ModelConfig, TinyModelConfig
from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path

__all__ = ["LoraSettings", "ModelConfig", "TinyModelConfig", "load_model", "load_tokenizer", "resolve_model_path"]
