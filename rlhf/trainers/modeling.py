"""Model-side helpers of the PPO roles: per-token values, critic initialisation, weight export for sync.

* Values: the critic is a sequence classifier with one output (``AutoModelForSequenceClassification``,
  ``num_labels=1``); its head is applied to the backbone's hidden state at EVERY position, and the value of
  response token ``t`` is read at position ``P + t - 1`` (the state before the token is emitted), matching
  the log-prob positions of :mod:`rlhf.rollout.sequences`.
* Critic initialisation: from the reward model when one is given (OpenRLHF, InstructGPT), else from the
  policy's backbone with a fresh value head whose weights are zero (values start at 0).
* Export: the policy's weights under plain HF names, LoRA adapters merged in and ZeRO-3 shards gathered,
  one tensor at a time, so the rollout engines load them with ``load_weights``. With LoRA, only the adapters
  change during training, so :func:`lora_deltas` exports just them (two small factors per adapted weight)
  for an engine that keeps the base weights and merges them itself
  (:meth:`rlhf.rollout.transformers_engine.TransformersRolloutEngine.load_weights`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from rlhf.core.errors import UserError
from rlhf.rollout.containers import TokenBatch
from rlhf.rollout.sequences import position_ids
from rlhf.rollout.weight_transfer import LORA_A, LORA_B

__all__ = ["check_same_vocabulary", "exported_weights", "has_lora", "lora_deltas", "token_values", "unwrap",
           "value_head", "zero_value_head"]


def unwrap(model):
    """The transformers model inside a DeepSpeed engine and/or a PEFT wrapper."""
    model = getattr(model, "module", model)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def value_head(model) -> torch.nn.Module:
    """The one-output head of a sequence classifier (``score`` or ``classifier``)."""
    base = unwrap(model)
    for name in ("score", "classifier"):
        head = getattr(base, name, None)
        if isinstance(head, torch.nn.Module):
            return head
    raise UserError(f"{type(base).__name__} has no 'score' or 'classifier' head; the critic and reward model "
                    "must load as AutoModelForSequenceClassification with num_labels=1")


def zero_value_head(model) -> None:
    """Set the value head to output 0 everywhere (a fresh critic head)."""
    head = value_head(model)
    with torch.no_grad():
        for param in head.parameters():
            param.zero_()


def token_values(critic, tokens: TokenBatch) -> torch.Tensor:
    """Critic values of each response token, ``[B, T]`` fp32, zero on response padding."""
    base = unwrap(critic)
    backbone = getattr(base, base.base_model_prefix)
    device = next(critic.parameters()).device
    ids = tokens.input_ids.to(device)
    mask = tokens.attention_mask.to(device)
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                      use_cache=False).last_hidden_state
    values = value_head(critic)(hidden).squeeze(-1)[:, tokens.prompt_width - 1:-1]
    return values.float() * mask[:, tokens.prompt_width:].float()


def check_same_vocabulary(tokenizer_a, tokenizer_b, what: str) -> None:
    """Raise unless both tokenizers map the same strings to the same ids (token-level roles need that)."""
    if tokenizer_a.get_vocab() != tokenizer_b.get_vocab():
        raise UserError(f"{what}: the tokenizers differ from the policy's; per-token roles (critic, reference) "
                        "need the policy's tokenizer (set critic.init_from=policy for a reward model of "
                        "another family)")


def _peft_merged(model):
    """Context: LoRA adapters merged into the base weights, unmerged afterwards."""
    inner = getattr(model, "module", model)
    if not hasattr(inner, "merge_adapter"):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def merged():
        inner.merge_adapter()
        try:
            yield
        finally:
            inner.unmerge_adapter()

    return merged()


def exported_weights(model, zero_stage: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, tensor)`` for every parameter and persistent buffer, LoRA merged, ZeRO-3 gathered.

    Every data-parallel rank must iterate this generator to the end (ZeRO-3 gathers are collective);
    the tensors are only valid until the next item is requested.
    """
    base = unwrap(model)
    with _peft_merged(model):
        for name, param in base.named_parameters():
            if "lora_" in name:
                continue
            clean = name.replace(".base_layer", "")
            if zero_stage == 3:
                import deepspeed

                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    yield clean, param.data
            else:
                yield clean, param.data
        for name, buffer in _persistent_buffers(base):
            yield name.replace(".base_layer", ""), buffer


def _lora_layers(model) -> Iterator[tuple[str, torch.nn.Module, str]]:
    """``(HF weight name, LoRA layer, adapter name)`` of every active adapter of a PEFT model."""
    for name, module in unwrap(model).named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, torch.nn.ModuleDict):
            continue
        for adapter in module.active_adapters:
            if adapter in lora_a:
                yield f"{name}.weight", module, adapter


def has_lora(model) -> bool:
    """Whether ``model`` carries plain LoRA adapters on linear layers (no DoRA, one active adapter per layer),
    which :func:`lora_deltas` exports."""
    layers = list(_lora_layers(model))
    one_each = len({name for name, _, _ in layers}) == len(layers)
    return bool(layers) and one_each and all(isinstance(m.lora_A[a], torch.nn.Linear) and not m.use_dora.get(a, False)
                                             for _, m, a in layers)


def lora_deltas(model) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield, for every adapted weight ``W`` (HF name), ``(name + LORA_A, A)`` then ``(name + LORA_B, s * B)``,
    the adapter's scaling folded into ``B``: the merged weight is ``W_base + (s * B) @ A``. ZeRO 0-2 only
    (rank 0 holds every adapter weight)."""
    for name, module, adapter in _lora_layers(model):
        yield name + LORA_A, module.lora_A[adapter].weight.data
        yield name + LORA_B, module.lora_B[adapter].weight.data * module.scaling[adapter]


def _persistent_buffers(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Buffers that are part of the state dict (rotary caches and other non-persistent ones are not)."""
    for prefix, sub in module.named_modules():
        for name, buffer in sub._buffers.items():
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buffer
