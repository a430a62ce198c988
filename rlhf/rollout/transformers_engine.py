"""The transformers rollout engine: batched sampling over a KV cache, seeded, one log-prob per token.

Prompts are wrapped in the tokenizer's chat template with the assistant turn opened, left-padded and
sampled ``batch_size`` prompts at a time (each repeated ``n`` times, prompt-major) by
:func:`rlhf.rollout.decoding.decode`, which drops rows from the batch as they finish. Sampling draws from a
generator seeded per call, so a call is reproducible from ``seed`` and leaves the caller's random state
untouched. Log-probs come from the raw logits of each step divided by the temperature (see
:mod:`rlhf.rollout.types`); ``logprobs`` recomputes them with one full forward pass.

A model's own ``generation_config.json`` (a hub model's repetition penalty, top-k or min-p) never shapes the
samples: the configured :class:`~rlhf.rollout.types.SamplingParams` are all that decides, as in the vLLM
engine and the learners' log-probs. :func:`bare_generation_config` gives ``model.generate`` (the chat server's
streaming) the same bare config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch

from rlhf.rollout.decoding import decode
from rlhf.rollout.sequences import pack_sequences, response_logprobs
from rlhf.rollout.types import NamedTensors, RolloutSample, SamplingParams
from rlhf.rollout.weight_transfer import LORA_A, LORA_B

__all__ = ["TransformersRolloutEngine", "bare_generation_config", "load_named_tensors"]


def load_named_tensors(model: torch.nn.Module, weights: NamedTensors) -> int:
    """Copy tensors into ``model``'s parameters and buffers by state-dict name; returns how many.

    Tied weights answer to every name they have (``lm_head.weight`` and ``model.embed_tokens.weight``).
    Unknown names and shape mismatches raise ``ValueError``: a sync that loads nothing must not pass.
    """
    targets = model.state_dict(keep_vars=True)
    items = weights.items() if isinstance(weights, Mapping) else weights
    loaded = 0
    unknown: list[str] = []
    with torch.no_grad():
        for name, tensor in items:
            target = targets.get(name)
            if target is None:
                unknown.append(name)
                continue
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(f"weight '{name}' has shape {tuple(tensor.shape)}, the model expects "
                                 f"{tuple(target.shape)}; sync from a learner with the same architecture")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
            loaded += 1
    if unknown:
        raise ValueError(f"{len(unknown)} weights have names the model does not know (first: '{unknown[0]}'); "
                         "send plain HF state-dict names (merge LoRA adapters first)")
    return loaded


@contextlib.contextmanager
def bare_generation_config(model, tokenizer) -> Iterator[None]:
    """Within the block, ``model.generate`` sees a generation config with the special-token ids alone."""
    from transformers import GenerationConfig

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = base.generation_config
    base.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                              pad_token_id=tokenizer.pad_token_id)
    try:
        yield
    finally:
        base.generation_config = saved


class TransformersRolloutEngine:
    """A :class:`~rlhf.rollout.types.RolloutEngine` over a transformers causal LM."""

    def __init__(self, model, tokenizer, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.model.requires_grad_(False)
        self._lora_base: dict[str, torch.Tensor] = {}  # base weights under LoRA-delta syncs

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "float32", device: str = "auto",
                        batch_size: int = 32) -> TransformersRolloutEngine:
        """Load the model and tokenizer of ``path`` (a model folder or hub id)."""
        from rlhf.models.loader import load_model, load_tokenizer

        return cls(load_model(path, "reference", dtype=dtype, device=device), load_tokenizer(path), batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """Chat-templated token ids of each prompt, assistant turn opened."""
        from rlhf.models.generation import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, prompts)

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams, seed: int,
                 progress: str | None = None) -> list[RolloutSample]:
        """``len(prompts) * params.n`` samples, prompt-major; reproducible from ``seed``; a progress bar over
        the batches is shown when ``progress`` names it. A batch holds ``batch_size`` prompts with their ``n``
        replies each."""
        from tqdm import tqdm

        if not prompts:
            return []
        ids = [seq for seq in self.prompt_ids(prompts) for _ in range(params.n)]
        texts = [p for p in prompts for _ in range(params.n)]
        rows = self.batch_size * params.n
        generator = torch.Generator(device=self.device).manual_seed(seed)
        samples: list[RolloutSample] = []
        for start in tqdm(range(0, len(ids), rows), desc=progress, unit="batch", disable=progress is None):
            samples.extend(self._generate_chunk(texts[start:start + rows], ids[start:start + rows], params, generator))
        return samples

    def _generate_chunk(self, prompts: list[str], ids: list[list[int]], params: SamplingParams,
                        generator: torch.Generator) -> list[RolloutSample]:
        tok = self.tokenizer
        eos, pad = tok.eos_token_id, tok.pad_token_id
        samples = []
        for prompt, prompt_ids, reply in zip(prompts, ids, decode(self.model, tok, ids, params, generator)):
            kept, finished = self._cut(reply.tokens, eos, pad, params.stop)
            text = tok.decode([t for t in kept if t != eos], skip_special_tokens=True)
            for stop in params.stop:
                if stop in text:
                    text = text[:text.index(stop)]
            samples.append(RolloutSample(
                prompt=prompt, text=text.strip(), prompt_ids=tuple(prompt_ids), response_ids=tuple(kept),
                logprobs=tuple(reply.logprobs[:len(kept)]), finished=finished))
        return samples

    def _cut(self, tokens: list[int], eos: int, pad: int, stop: tuple[str, ...]) -> tuple[list[int], bool]:
        """Tokens up to and including EOS (finished), or up to a stop string, or all of them (truncated)."""
        if eos in tokens:
            return tokens[:tokens.index(eos) + 1], True
        if stop:
            for end in range(1, len(tokens) + 1):
                if any(s in self.tokenizer.decode(tokens[:end], skip_special_tokens=True) for s in stop):
                    return tokens[:end], True
        return tokens, False

    def load_weights(self, weights: NamedTensors) -> int:
        """Copy tensors by name into the model (see :func:`load_named_tensors`), each as it arrives; returns
        how many.

        LoRA factors (names ``<weight>@lora_A`` then ``<weight>@lora_B``, from the learner's LoRA-only sync)
        set ``weight = base + B @ A``, where ``base`` is the weight as it was before the first factors arrived
        for it (kept once, so deltas never accumulate).
        """
        items = weights.items() if isinstance(weights, Mapping) else weights
        factor_a: dict[str, torch.Tensor] = {}
        targets = dict(self.model.named_parameters())
        merged = 0

        def plain() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal merged
            for name, tensor in items:
                if name.endswith(LORA_A):
                    factor_a[name.removesuffix(LORA_A)] = tensor.clone()
                elif name.endswith(LORA_B):
                    self._merge_lora(name.removesuffix(LORA_B), factor_a, tensor, targets)
                    merged += 2
                else:
                    yield name, tensor

        loaded = load_named_tensors(self.model, plain())
        if factor_a:
            raise ValueError(f"LoRA factor '{next(iter(factor_a))}{LORA_A}' came without its {LORA_B}")
        return loaded + merged

    @torch.no_grad()
    def _merge_lora(self, weight: str, factor_a: dict[str, torch.Tensor], factor_b: torch.Tensor,
                    targets: dict[str, torch.nn.Parameter]) -> None:
        """``weight = base + factor_b @ A`` (``A`` taken out of ``factor_a``), the base kept on first use."""
        if weight not in targets or weight not in factor_a:
            raise ValueError(f"LoRA factor '{weight}{LORA_B}' names no weight of the model, or came without its "
                             f"'{weight}{LORA_A}'; sync from a learner with the same base model")
        target = targets[weight]
        base = self._lora_base.setdefault(weight, target.detach().clone())
        delta = factor_b.to(device=target.device, dtype=torch.float32) @ factor_a.pop(weight).to(
            device=target.device, dtype=torch.float32)
        target.copy_((base.float() + delta).to(target.dtype))

    @torch.no_grad()
    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]],
                 temperature: float = 1.0) -> list[list[float]]:
        """Log-prob of every response token given its prompt, by one full forward pass per batch."""
        out: list[list[float]] = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(prompt_ids), self.batch_size):
            packed = pack_sequences(prompt_ids[start:start + self.batch_size],
                                    response_ids[start:start + self.batch_size], pad)
            logp = response_logprobs(self.model, packed.input_ids.to(self.device),
                                     packed.attention_mask.to(self.device), packed.prompt_width, temperature).cpu()
            for row, response in enumerate(response_ids[start:start + self.batch_size]):
                out.append(logp[row, :len(response)].tolist())
        return out
