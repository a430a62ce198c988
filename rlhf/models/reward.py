"""Reward-model scoring: the scalar reward of (conversation, reply), tokenised exactly as the RM stage
trains on it (the chat template, the logit of the sequence-classification head at the last token).

Shared by the RM stage (training data and its own evaluation), the PPO reward role and evaluation.
"""

from __future__ import annotations

__all__ = ["REWARD_STATS_FILE", "chat_ids", "reward_scores"]

# Mean and std of the RM's rewards on training replies, saved beside its weights; PPO normalises with them.
REWARD_STATS_FILE = "reward_stats.json"


def chat_ids(tokenizer, conversation: list[dict[str, str]], reply: str) -> list[int]:
    """Token ids of ``conversation`` followed by the assistant ``reply``, rendered by the chat template."""
    ids = tokenizer.apply_chat_template(conversation + [{"role": "assistant", "content": reply}], tokenize=True,
                                        return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids)


def reward_scores(model, tokenizer, conversations: list[list[dict[str, str]]], replies: list[str],
                  batch_size: int = 64, max_length: int | None = None, progress: str | None = None) -> list[float]:
    """Scalar reward of each (conversation, reply), tokenised with the chat template as in training; a progress
    bar over the batches is shown when ``progress`` names it."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    ids = [chat_ids(tokenizer, conv, reply) for conv, reply in zip(conversations, replies)]
    if max_length:
        ids = [x[-max_length:] for x in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [0.0] * len(ids)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc=progress, unit="batch", disable=progress is None):
            chunk = order[start:start + batch_size]
            width = max(len(ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, width - len(ids[i]):] = torch.tensor(ids[i])
                attention[row, width - len(ids[i]):] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            for row, i in enumerate(chunk):
                out[i] = float(logits[row, 0])
    model.train(was_training)
    return out
