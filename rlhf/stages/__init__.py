"""Pipeline stages: one readable file per stage (config, setup, loop, save).

``STAGE_MODULES`` lists every stage module; importing one registers its config model, so
``load_stage_modules()`` makes every stage's ``stage:`` name known to the config loader.
"""

from __future__ import annotations

import importlib

STAGE_MODULES: tuple[str, ...] = (
    "rlhf.stages.prepare",
    "rlhf.stages.sft",
    "rlhf.stages.generate",
    "rlhf.stages.evaluate",
    "rlhf.stages.report",
    "rlhf.stages.ppo",
    "rlhf.stages.reward_model",
    "rlhf.stages.dpo",
    "rlhf.labeling.loop.config",
    "rlhf.stages.pipeline",
)


def load_stage_modules() -> list[str]:
    """Import every stage module (registering its config); returns their names."""
    for name in STAGE_MODULES:
        importlib.import_module(name)
    return list(STAGE_MODULES)
