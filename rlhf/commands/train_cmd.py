"""``rlhf train sft|rm|dpo|ppo``: the training stages, one module each under ``rlhf/stages``."""

from __future__ import annotations

import argparse
import importlib

__all__ = ["add_parser"]

TRAIN_STAGES = ("rlhf.stages.sft", "rlhf.stages.ppo", "rlhf.stages.reward_model", "rlhf.stages.dpo")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model: sft, rm, dpo, ppo")
    sub = parser.add_subparsers(dest="train_command", metavar="STAGE", required=True)
    for name in TRAIN_STAGES:
        importlib.import_module(name).add_parser(sub)
