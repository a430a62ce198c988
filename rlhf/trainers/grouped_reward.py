"""Bradley-Terry reward training with every reply of a prompt scored once per step.

TRL's ``RewardTrainer`` takes one (chosen, rejected) pair per row. A prompt whose K candidates were ranked gives
up to K(K-1)/2 pairs over only K distinct replies, so pair rows cost K(K-1) forward passes per prompt and epoch:
12 for K = 4, 56 for K = 8. Nothing in TRL batches a ranking that way, so this module keeps TRL's trainer
(optimiser, schedule, logging, checkpoints, LoRA, DeepSpeed, Ray Train) and changes only what a row is:

* a row is one prompt (written by :func:`rlhf.stages.rm.group_rows`, so the driver that writes the rows
  never imports TRL): ``replies_ids`` (each distinct reply, tokenised with its prompt), and the pairs among
  them as ``chosen_index`` / ``rejected_index`` (and ``margin`` when the loss has one);
* :class:`GroupedPreferenceCollator` pads every reply of the batch into one tensor and shifts the indices;
* :class:`GroupedRewardTrainer` scores each reply once and applies TRL's loss to every pair of the batch:
  ``mean(-log sigmoid(r_c - r_r - m))`` plus ``center_rewards_coefficient * mean((r_c + r_r)^2)``. It scores
  the replies in chunks of similar length (:func:`length_chunks`), each cut to its longest reply: padding is
  right-side and attention causal, so the rewards are those of the whole padded tensor, without the compute
  that padding a short reply to the batch's longest one costs (about half of it on the quickstart's replies).

The loss over an epoch is the pairwise one; only the batches differ (all pairs of a prompt share a step). This
is how InstructGPT trained its reward model (Ouyang et al. 2022, section 3.5: all comparisons of a prompt as
one batch element, one forward pass per completion; pair rows over-fit within an epoch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput
from trl import RewardTrainer

__all__ = ["GROUP_COLUMNS", "GroupedPreferenceCollator", "GroupedRewardTrainer", "length_chunks"]

GROUP_COLUMNS = ["replies_ids", "chosen_index", "rejected_index", "margin"]
CHUNK_ROWS = 16  # replies per forward pass when a batch is scored in length chunks


def length_chunks(lengths: torch.Tensor, rows: int) -> list[torch.Tensor]:
    """Row indices sorted by ``lengths`` and cut into chunks of at most ``rows``: the replies of a chunk differ
    little in length, so cutting the chunk to its longest drops most of the batch's padding."""
    order = torch.argsort(lengths, stable=True)
    return list(order.split(rows))


@dataclass
class GroupedPreferenceCollator:
    """Pads every reply of a batch of prompt rows (right padding) into one ``input_ids`` tensor; the pair
    indices are shifted to that tensor's rows."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        replies, chosen, rejected, margins = [], [], [], []
        for example in examples:
            offset = len(replies)
            replies.extend(example["replies_ids"])
            chosen.extend(offset + i for i in example["chosen_index"])
            rejected.extend(offset + i for i in example["rejected_index"])
            margins.extend(example.get("margin") or [])
        width = max(len(ids) for ids in replies)
        input_ids = torch.full((len(replies), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(replies), width), dtype=torch.long)
        for row, ids in enumerate(replies):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask,
                 "chosen_index": torch.tensor(chosen, dtype=torch.long),
                 "rejected_index": torch.tensor(rejected, dtype=torch.long)}
        if margins:
            batch["margin"] = torch.tensor(margins, dtype=torch.float)
        return batch


class GroupedRewardTrainer(RewardTrainer):
    """TRL's ``RewardTrainer`` on prompt rows (see the module docstring); pass a
    :class:`GroupedPreferenceCollator` as ``data_collator``."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "replies_ids" not in dataset.column_names:
            raise ValueError(f"{dataset_name} dataset has no replies_ids column; write it with the RM stage's "
                             "rlhf.stages.rm.group_rows")
        return dataset

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = list(GROUP_COLUMNS)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        lengths = inputs["attention_mask"].sum(-1)
        chunks = length_chunks(lengths, CHUNK_ROWS)
        widths = [int(lengths[chunk].max()) for chunk in chunks]
        scores = [model(input_ids=inputs["input_ids"][chunk, :width], attention_mask=inputs["attention_mask"][chunk, :width],
                        use_cache=False).logits for chunk, width in zip(chunks, widths)]
        logits = torch.cat(scores)[torch.argsort(torch.cat(chunks))]
        outputs = SequenceClassifierOutput(logits=logits)
        rewards = logits.squeeze(-1)
        rewards_chosen = rewards[inputs["chosen_index"]]
        rewards_rejected = rewards[inputs["rejected_index"]]
        gap = rewards_chosen - rewards_rejected
        if "margin" in inputs:
            gap = gap - inputs["margin"]
        loss = -nn.functional.logsigmoid(gap).mean()
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)

        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            all_rewards = self.accelerator.gather(rewards)
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            accuracy = (rewards_chosen > rewards_rejected).float().mean()
            self._metrics[mode]["accuracy"].append(self.accelerator.gather_for_metrics(accuracy).mean().item())
            margin = (rewards_chosen - rewards_rejected).mean()
            self._metrics[mode]["margin"].append(self.accelerator.gather_for_metrics(margin).mean().item())
        return (loss, outputs) if return_outputs else loss
