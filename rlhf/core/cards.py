"""Model cards and dataset cards: the ``README.md`` the Hugging Face ecosystem reads in a folder.

Every model folder a stage writes (a folder with ``config.json``, or a PEFT adapter with
``adapter_config.json``) gets a model card when the stage finishes (:meth:`rlhf.core.artifacts.StageRun.finish`
calls :func:`write_cards`): YAML metadata (``library_name``, ``base_model`` when it is a hub id, ``tags``)
and a body naming the stage, the run, the base model, every input with its content hash and the stage run
it came from (the lineage ``rlhf lineage`` walks), the config fingerprint and the stage's key metrics.

A stage folder that holds JSONL datasets (pairs, candidates, samples) gets a dataset card whose ``configs``
metadata names each file, so ``datasets.load_dataset(stage_folder, name)`` opens it without a loading script.
The cards are written with the huggingface_hub card classes, the format the hub renders.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

__all__ = ["DATASET_FILES", "is_model_folder", "model_card_text", "write_cards"]

# JSONL outputs that open as datasets, by the config name their dataset card gives them.
DATASET_FILES = {"pairs": "pairs.jsonl", "candidates": "candidates.jsonl", "samples": "samples.jsonl",
                 "eval_baseline": "eval_baseline.jsonl"}
# Input keys that name the model a stage started from, in order of preference.
_BASE_KEYS = ("base_model", "policy")
_MAX_METRICS = 24


def is_model_folder(path: Path) -> bool:
    """True for a folder with HF weights' config or a PEFT adapter config."""
    return path.is_dir() and ((path / "config.json").is_file() or (path / "adapter_config.json").is_file())


def _hub_id(path: str) -> str | None:
    """The hub id of a base model downloaded into the Hugging Face cache (``models--org--name/snapshots/``),
    or None for other local folders (the tiny model, a converted GGUF file, a stage output)."""
    match = re.search(r"models--([^/]+?)--([^/]+)/snapshots/", path)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def _base(inputs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    for key in _BASE_KEYS:
        if key in inputs:
            return inputs[key]
    return None


def _scalar_metrics(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = [(k, v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))]
    return rows[:_MAX_METRICS]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card_text(*, stage: str, run_id: str, fingerprint: str, folder: str, adapter: bool,
                    inputs: dict[str, dict[str, Any]], metrics: dict[str, Any]) -> str:
    """The README.md of one model folder: metadata, lineage, key metrics and how to load it."""
    from huggingface_hub import ModelCard, ModelCardData

    base = _base(inputs)
    base_path = base["path"] if base else None
    data = ModelCardData(library_name="peft" if adapter else "transformers",
                         base_model=_hub_id(base_path) if base_path else None,
                         tags=["rlhf-pipeline", stage] + (["lora"] if adapter else []))
    lines = [f"# {stage} model ({folder}/)", "",
             f"Written by the rlhf-pipeline `{stage}` stage, run `{run_id}`, config fingerprint `{fingerprint[:16]}`."]
    if base_path:
        lines += ["", f"**Base model:** `{base_path}`" + (f" (stage run `{base['run_id']}`)" if base.get("run_id") else "")]
    lines += ["", "## Lineage", "", "| input | path | sha256 | from stage run |", "|---|---|---|---|"]
    for key, meta in sorted(inputs.items()):
        lines.append(f"| {key} | `{meta.get('path')}` | `{str(meta.get('hash', ''))[:16]}` | "
                     f"{meta.get('stage_dir') or '-'} |")
    lines += ["", "`rlhf lineage` on this folder walks the chain back to the annotations."]
    scalars = _scalar_metrics(metrics)
    if scalars:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars]
    lines += ["", "## Use", "", "```python"]
    if adapter:
        lines += ["from peft import AutoPeftModelForCausalLM  # AutoPeftModelForSequenceClassification for a reward model",
                  f'model = AutoPeftModelForCausalLM.from_pretrained("{folder}")']
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer  # or AutoModelForSequenceClassification",
                  f'model = AutoModelForCausalLM.from_pretrained("{folder}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{folder}")']
    lines.append("```")
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def _dataset_card_text(stage: str, run_id: str, files: dict[str, str], inputs: dict[str, dict[str, Any]]) -> str:
    from huggingface_hub import DatasetCard, DatasetCardData

    configs = [{"config_name": name, "data_files": [{"split": "train", "path": rel}], **({"default": True} if i == 0 else {})}
               for i, (name, rel) in enumerate(files.items())]
    data = DatasetCardData(tags=["rlhf-pipeline", stage], configs=configs)
    lines = [f"# {stage} datasets", "", f"Written by the rlhf-pipeline `{stage}` stage, run `{run_id}`.", "",
             "| config | file |", "|---|---|", *[f"| {name} | `{rel}` |" for name, rel in files.items()], "",
             "## Lineage", "", *[f"- {key}: `{meta.get('path')}` (sha256 `{str(meta.get('hash', ''))[:16]}`)"
                                 for key, meta in sorted(inputs.items())],
             "", "```python", "from datasets import load_dataset",
             f'rows = load_dataset("path/to/this/folder", "{next(iter(files))}", split="train")', "```"]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def write_cards(stage_dir: Path, outputs: list[str], *, stage: str, run_id: str, fingerprint: str,
                inputs: dict[str, dict[str, Any]], metrics: dict[str, Any]) -> list[str]:
    """Write a model card into every model folder among ``outputs`` and a dataset card for the JSONL datasets;
    returns the card paths (relative to ``stage_dir``) that are outputs of their own."""
    from rlhf.core.artifacts import atomic_write_text

    written: list[str] = []
    for rel in outputs:
        folder = stage_dir / rel
        if is_model_folder(folder):
            adapter = not (folder / "config.json").is_file()
            atomic_write_text(folder / "README.md", model_card_text(
                stage=stage, run_id=run_id, fingerprint=fingerprint, folder=rel, adapter=adapter, inputs=inputs,
                metrics=metrics))
    files = {name: rel for name, rel in DATASET_FILES.items() if rel in outputs}
    if files:
        atomic_write_text(stage_dir / "README.md", _dataset_card_text(stage, run_id, files, inputs))
        written.append("README.md")
    return written
