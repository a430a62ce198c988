"""The generation engine behind the chat API: a transformers causal LM that answers a whole conversation
(its own chat template, the model's ``generation_config`` never shaping the sample), whole or streamed token by
token with transformers' ``TextIteratorStreamer``.

The rollout engines (:mod:`rlhf.rollout`) sample batches of single-turn prompts for training; a served
conversation is multi-turn, arrives one at a time and streams, so this small class holds what they do not.
One replica generates one reply at a time (a lock); Ray Serve replicas give the concurrency.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rlhf.rollout.transformers_engine import bare_generation_config

__all__ = ["ChatEngine", "Generation"]


@dataclass
class Generation:
    """A finished reply and its token counts; ``finish_reason`` is OpenAI's ("stop" or "length")."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class ChatEngine:
    """Answers conversations with one loaded model."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str, dtype: str = "float32", device: str = "auto") -> ChatEngine:
        from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path

        folder = resolve_model_path(path)
        return cls(load_model(folder, "reference", dtype=dtype, device=device), load_tokenizer(folder))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def context(self) -> int:
        """The longest sequence (conversation and reply) the model takes."""
        return int(getattr(self.model.config, "max_position_embeddings", None) or 2048)

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the conversation in the model's chat template, the assistant turn opened."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def _kwargs(self, ids: list[int], temperature: float, top_p: float, max_tokens: int) -> dict:
        tok = self.tokenizer
        greedy = temperature == 0
        return {"input_ids": torch.tensor([ids], device=self.device),
                "attention_mask": torch.ones((1, len(ids)), dtype=torch.long, device=self.device),
                "max_new_tokens": max_tokens, "do_sample": not greedy,
                "temperature": None if greedy else temperature,
                "top_p": None if greedy or top_p == 1.0 else top_p, "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id, "use_cache": True}

    def _finished(self, prompt_len: int, sequence: torch.Tensor, text: str | None = None) -> Generation:
        """The reply's tokens up to and including EOS ("stop"), or all of them ("length")."""
        new = sequence[prompt_len:].tolist()
        eos = self.tokenizer.eos_token_id
        finished = eos in new
        if finished:
            new = new[:new.index(eos) + 1]
        if text is None:
            text = self.tokenizer.decode([t for t in new if t != eos], skip_special_tokens=True)
        return Generation(text.strip(), prompt_len, len(new), "stop" if finished else "length")

    @torch.no_grad()
    def generate(self, messages: list[dict[str, str]], temperature: float, top_p: float,
                 max_tokens: int) -> Generation:
        ids = self.prompt_ids(messages)
        with self._lock, bare_generation_config(self.model, self.tokenizer):
            out = self.model.generate(**self._kwargs(ids, temperature, top_p, max_tokens))
        return self._finished(len(ids), out[0])

    def stream(self, messages: list[dict[str, str]], temperature: float, top_p: float,
               max_tokens: int) -> Iterator[str | Generation]:
        """Yields text pieces as they are decoded, then the :class:`Generation` of the whole reply."""
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        result: dict[str, torch.Tensor] = {}
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.no_grad(), self._lock, bare_generation_config(self.model, self.tokenizer):
                    result["out"] = self.model.generate(**self._kwargs(ids, temperature, top_p, max_tokens),
                                                        streamer=streamer)
            except Exception as err:  # noqa: BLE001 - re-raised in the caller once the streamer ends
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        pieces = []
        for piece in streamer:
            if piece:
                pieces.append(piece)
                yield piece
        thread.join()
        if failure:
            raise failure[0]
        yield self._finished(len(ids), result["out"][0], "".join(pieces))
