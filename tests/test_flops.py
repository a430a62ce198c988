"""Model FLOPs per token and MFU at hand values."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf.utils.flops import decoder_flops_per_token, mfu, non_embedding_parameters, peak_tflops


def test_flops_per_token_hand_values():
    # 6N + 12LHS: N=1e6, L=2, H=64, S=128 -> 6e6 + 196608.
    assert decoder_flops_per_token(1_000_000, 2, 64, 128) == 6e6 + 12 * 2 * 64 * 128
    assert decoder_flops_per_token(1_000_000, 2, 64, 128, training=False) == 2e6 + 4 * 2 * 64 * 128
    with pytest.raises(ValueError, match="seq_len must be > 0"):
        decoder_flops_per_token(10, 1, 1, 0)


def test_mfu_hand_value_and_peak_lookup():
    # 10k tokens/s at 6e9 FLOPs/token = 6e13 FLOP/s, over a 989.4 TFLOP/s peak.
    assert mfu(10_000, 6e9, 989.4) == pytest.approx(6e13 / 989.4e12)
    assert peak_tflops("NVIDIA H200") == 989.4
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe") == 756.5
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("Some CPU") is None
    with pytest.raises(ValueError, match="peak"):
        mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize("tied", [True, False])
def test_non_embedding_parameters_counts_the_output_projection_once(tied):
    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    embedding = 100 * 16
    # Untied: everything but the input embedding. Tied: the shared matrix is counted once, as the projection.
    assert non_embedding_parameters(model) == (total if tied else total - embedding)
