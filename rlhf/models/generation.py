"""Chat-templated prompt token ids, shared by every engine that samples from a chat model."""

from __future__ import annotations

__all__ = ["chat_prompt_ids"]


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each user prompt wrapped in the chat template with the assistant turn opened."""
    out = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out
