"""One decoding step of a Llama-architecture model (Llama, Qwen2) over a preallocated KV buffer, without the
transformers module stack.

Why not the model's own forward: at one token a row, a decoding step of a small model is mostly the fixed
cost of its ops, not their arithmetic, and the library's forward adds its own on top: module calls, the
attention mask it builds each step, the attention dispatch, and a KV cache that grows by concatenation,
copying itself every step. On the quickstart's policy (4 layers, 16 rows, one CPU thread) the model's forward
took 4.8-5.4 ms a step and this one 3.6-3.9 ms, with the same greedy tokens and log-probs within 1e-5
(``tests/test_decoding.py``). A GRPO step of ``benchmarks/ppo_throughput.py`` samples 48 tokens, so the
difference is about 60 ms of a 0.63 s step. vLLM does this job on GPUs (:mod:`rlhf.rollout.vllm_engine`);
the library's static cache and ``torch.compile`` were slower here on CPU.

What stays the library's: the prompt's forward pass (the prefill, whose KV cache this step takes over), the
rotary embedding (the model's own ``rotary_emb`` module, so every RoPE scaling a config names applies) and
``apply_rotary_pos_emb``. What is here: the layer sequence of a decoding step (RMSNorm, attention with
grouped KV heads, SiLU-gated MLP), in the library's order of operations, with the layers' own weights and
biases (no copies).

:func:`supports` says which models take this path; :func:`rlhf.rollout.decoding.decode` falls back to the
model's forward for the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KVDecoder", "supports"]

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
GROW = 64  # KV buffer positions added at a time


def supports(model) -> bool:
    """True when ``model`` is a Llama or Qwen2 causal LM with full attention in every layer and a SiLU MLP."""
    config = model.config
    if type(model).__name__ not in ARCHITECTURES or getattr(config, "hidden_act", None) != "silu":
        return False
    if getattr(config, "use_sliding_window", False):
        return False
    return all(kind == "full_attention" for kind in (getattr(config, "layer_types", None) or ()))


def _rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    """The library's RMSNorm: normalised in float32, cast back, then scaled."""
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon).to(x.dtype)


class KVDecoder:
    """Decoding steps of ``model`` after its prefill, which filled ``cache`` (a ``DynamicCache``) for the
    batch's ``rows`` over ``width`` positions. Row order is the cache's; :meth:`select` keeps some rows."""

    def __init__(self, model, cache, width: int) -> None:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rope = apply_rotary_pos_emb
        self.inner, self.head = model.model, model.lm_head
        attention = self.inner.layers[0].self_attn
        self.head_dim, self.scaling = attention.head_dim, attention.scaling
        self.heads = model.config.num_attention_heads
        self.kv_heads = model.config.num_key_value_heads
        self.width = width  # positions filled
        self.keys = [layer.keys for layer in cache.layers]
        self.values = [layer.values for layer in cache.layers]
        self._grow(width + GROW)

    def _grow(self, capacity: int) -> None:
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = old.new_zeros((*old.shape[:2], capacity, old.shape[3]))
                new[:, :, :self.width] = old[:, :, :self.width]
                buffers[i] = new

    def select(self, rows: torch.Tensor) -> None:
        """Keep the batch rows ``rows`` (indices into the current rows), in that order."""
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                buffers[i] = old[rows]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (rows x vocab) of the next token after feeding ``tokens`` (one per row) at ``positions``;
        ``attention_mask`` (rows x positions filled + 1, 1 = attend) covers the cache and the new token."""
        t = self.width
        if t == self.keys[0].shape[2]:
            self._grow(t + GROW)
        rows, group = tokens.shape[0], self.heads // self.kv_heads
        x = F.embedding(tokens[:, None], self.inner.embed_tokens.weight)
        cos, sin = self.inner.rotary_emb(x, positions[:, None])
        bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device).masked_fill_(
            attention_mask == 0, float("-inf"))[:, None, None, :]
        for layer, keys, values in zip(self.inner.layers, self.keys, self.values):
            attention, mlp = layer.self_attn, layer.mlp
            hidden = _rms_norm(x, layer.input_layernorm)
            q = F.linear(hidden, attention.q_proj.weight, attention.q_proj.bias)
            k = F.linear(hidden, attention.k_proj.weight, attention.k_proj.bias)
            v = F.linear(hidden, attention.v_proj.weight, attention.v_proj.bias)
            q, k = self.rope(q.view(rows, 1, self.heads, self.head_dim).transpose(1, 2),
                             k.view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
            keys[:, :, t] = k[:, :, 0]
            values[:, :, t] = v.view(rows, self.kv_heads, self.head_dim)
            q = q.reshape(rows, self.kv_heads, group, self.head_dim)
            scores = torch.matmul(q, keys[:, :, :t + 1].transpose(-1, -2)) * self.scaling + bias
            out = torch.matmul(scores.softmax(-1, dtype=torch.float32).to(q.dtype), values[:, :, :t + 1])
            x = x + F.linear(out.reshape(rows, 1, self.heads * self.head_dim), attention.o_proj.weight,
                             attention.o_proj.bias)
            hidden = _rms_norm(x, layer.post_attention_layernorm)
            gated = F.silu(F.linear(hidden, mlp.gate_proj.weight, mlp.gate_proj.bias))
            x = x + F.linear(gated * F.linear(hidden, mlp.up_proj.weight, mlp.up_proj.bias), mlp.down_proj.weight,
                             mlp.down_proj.bias)
        self.width = t + 1
        return F.linear(_rms_norm(x, self.inner.norm)[:, 0], self.head.weight, self.head.bias)
