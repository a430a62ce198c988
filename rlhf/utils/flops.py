"""Model FLOPs per token and model FLOPs utilisation (MFU) of decoder-only transformers.

Per token of a sequence of ``S`` tokens, a decoder with ``N`` non-embedding parameters, ``L`` layers and
hidden width ``H`` costs ``2N`` FLOPs in its weight matrix multiplies and ``4LHS`` in attention's ``QK^T``
and ``AV`` products forward; a training step (forward and backward) costs three times that,
``6N + 12LHS`` (Chowdhery et al. 2022, PaLM, appendix B). Recomputation under gradient checkpointing is
not counted: MFU counts the model's FLOPs, not the hardware's.

``MFU = tokens_per_s * flops_per_token / peak_flops``.
"""

from __future__ import annotations

import torch

__all__ = ["PEAK_BF16_TFLOPS", "decoder_flops_per_token", "mfu", "non_embedding_parameters", "peak_tflops"]

# Dense bf16 tensor-core peak (no sparsity) from the vendors' data sheets, TFLOP/s.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 NVL": 835.5,
    "H100 PCIe": 756.5,
    "A100": 312.0,
    "L40S": 362.1,
    "A10G": 125.0,
}


def decoder_flops_per_token(non_embedding_params: int, num_layers: int, hidden_size: int, seq_len: int,
                            training: bool = True) -> float:
    """FLOPs per token: ``6N + 12LHS`` for a training step, ``2N + 4LHS`` for a forward pass."""
    for name, value in (("non_embedding_params", non_embedding_params), ("num_layers", num_layers),
                        ("hidden_size", hidden_size), ("seq_len", seq_len)):
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    forward = 2.0 * non_embedding_params + 4.0 * num_layers * hidden_size * seq_len
    return 3.0 * forward if training else forward


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the input embedding (the output projection counts: it is a matrix multiply)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    skip = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    total = sum(p.numel() for p in model.parameters() if id(p) not in skip)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and any(id(p) in skip for p in output.parameters()):  # tied: count the projection once
        total += sum(p.numel() for p in output.parameters())
    return total


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a CUDA device from its name (``torch.cuda.get_device_name()``); None when unknown."""
    upper = device_name.upper()
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        parts = key.upper().split()
        if all(part in upper for part in parts):
            return PEAK_BF16_TFLOPS[key]
    if "H100" in upper:
        return PEAK_BF16_TFLOPS["H100 SXM"]
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops_value: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (a fraction in [0, 1] on real hardware)."""
    if peak_tflops_value <= 0:
        raise ValueError(f"peak TFLOP/s must be > 0, got {peak_tflops_value}")
    return tokens_per_s * flops_per_token / (peak_tflops_value * 1e12)
