"""SFT batches: with ``train.group_by_length`` a batch holds examples of similar length, so it
pads less than a uniform shuffle; every example is still seen once an epoch."""

from __future__ import annotations

import pytest


def _batches(tmp_path, group_by_length: bool) -> tuple[list[tuple[int, int]], int]:
    """(real tokens, padded tokens) of each batch of one epoch of the SFT trainer's dataloader, and the tokens
    of its tokenised training set."""
    from trl import SFTTrainer

    from rlhf.configs.sft import SFTConfig
    from rlhf.models.config import TinyModelConfig
    from rlhf.models.loader import load_model, load_tokenizer, resolve_model_path
    from rlhf.stages.sft import to_dataset, trainer_config
    from rlhf.world.demo import sft_corpus

    path = resolve_model_path("tiny", TinyModelConfig())
    cfg = SFTConfig.model_validate({"train": {"batch_size": 8, "group_by_length": group_by_length,
                                              "report_to": []}})
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in sft_corpus(400, seed=0)]
    trainer = SFTTrainer(model=load_model(path, "policy", device="cpu"), args=trainer_config(cfg, tmp_path, "cpu"),
                         train_dataset=to_dataset(rows), processing_class=load_tokenizer(path))
    batches = [(int(b["attention_mask"].sum()), b["attention_mask"].numel()) for b in trainer.get_train_dataloader()]
    return batches, sum(len(ids) for ids in trainer.train_dataset["input_ids"])


@pytest.mark.parametrize("grouped", [True, False])
def test_each_example_is_seen_once_an_epoch(tmp_path, grouped):
    batches, tokens = _batches(tmp_path, grouped)
    assert sum(real for real, _ in batches) == tokens


def test_grouping_by_length_pads_less_than_a_shuffle(tmp_path):
    grouped, _ = _batches(tmp_path, True)
    shuffled, _ = _batches(tmp_path, False)
    overhead = {name: sum(pad for _, pad in b) / sum(real for real, _ in b) for name, b in
                (("grouped", grouped), ("shuffled", shuffled))}
    assert overhead["grouped"] < 1.1 < overhead["shuffled"], overhead
