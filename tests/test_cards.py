"""Model and dataset cards written when a stage finishes: a model folder's README names its base model and
its lineage (the input stage runs with their hashes) and its metrics; JSONL datasets open with
``datasets.load_dataset`` on the stage folder through the dataset card's ``configs``."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.core.artifacts import begin_stage, read_manifest


def _tiny_config_folder(folder: Path, adapter: bool = False) -> None:
    folder.mkdir(parents=True)
    name = "adapter_config.json" if adapter else "config.json"
    (folder / name).write_text(json.dumps({"model_type": "llama"}))


def test_model_folder_card_names_base_lineage_and_metrics(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    prepare = begin_stage("label_pull", {}, {}, tmp_path / "runs")
    prepare.dir.mkdir(parents=True)
    (prepare.dir / "pairs.jsonl").write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"}) + "\n")
    pulled = prepare.finish(["pairs.jsonl"])

    hub_snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "12ab"
    _tiny_config_folder(hub_snapshot)
    run = begin_stage("rm", {"lr": 1}, {"pairs": prepare.dir / "pairs.jsonl", "base_model": hub_snapshot},
                      tmp_path / "runs")
    _tiny_config_folder(run.dir / "model")
    _tiny_config_folder(run.dir / "adapter", adapter=True)
    manifest = run.finish(["model", "adapter"], metrics={"eval/accuracy": 0.8125, "data/source": "x"})

    card = ModelCard.load(run.dir / "model" / "README.md")
    assert card.data.library_name == "transformers" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M"
    assert {"rlhf-pipeline", "rm"} <= set(card.data.tags)
    assert manifest["run_id"] in card.text and str(prepare.dir) in card.text
    assert pulled["outputs"]["pairs.jsonl"][:16] in card.text  # the input's content hash
    assert "| eval/accuracy | 0.8125 |" in card.text and "data/source" not in card.text
    adapter = ModelCard.load(run.dir / "adapter" / "README.md")
    assert adapter.data.library_name == "peft" and "AutoPeftModelForCausalLM" in adapter.text
    # The card is written before the outputs are hashed, so the manifest's hash covers it.
    assert read_manifest(run.dir)["outputs"]["model"] == manifest["outputs"]["model"]


def test_local_base_model_is_not_a_hub_id(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    base = tmp_path / "base"
    _tiny_config_folder(base)
    run = begin_stage("sft", {}, {"base_model": base}, tmp_path / "runs")
    _tiny_config_folder(run.dir / "model")
    run.finish(["model"])
    card = ModelCard.load(run.dir / "model" / "README.md")
    assert card.data.base_model is None and f"**Base model:** `{base}`" in card.text


def test_jsonl_outputs_open_with_load_dataset(tmp_path: Path) -> None:
    from datasets import load_dataset

    run = begin_stage("generate", {}, {}, tmp_path / "runs")
    run.dir.mkdir(parents=True)
    rows = [{"prompt": f"p{i}", "responses": [f"r{i}a", f"r{i}b"]} for i in range(3)]
    (run.dir / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run.dir / "samples.jsonl").write_text(json.dumps({"prompt": "p", "reply": "r", "score": 0.5}) + "\n")
    (run.dir / "report.json").write_text("{}")
    manifest = run.finish(["candidates.jsonl", "samples.jsonl", "report.json"])

    assert "README.md" in manifest["outputs"]
    default = load_dataset(str(run.dir), split="train")
    assert default.to_list() == rows
    assert load_dataset(str(run.dir), "samples", split="train")[0]["reply"] == "r"


def test_an_unreachable_hub_id_is_a_one_line_error(monkeypatch) -> None:
    import pytest

    from rlhf.core.errors import UserError
    from rlhf.models.loader import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="hub model no-such-org/no-such-model could not be downloaded"):
        resolve_model_path("no-such-org/no-such-model")
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_path("runs/sft/not-a-folder")
