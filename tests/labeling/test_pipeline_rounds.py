"""``rlhf pipeline`` with ``rounds: 2`` on the real local labeling service: rounds compound.

A small chain (the tiny model, 100 new prompts a round, two simulated annotators, iterative DPO) runs two
rounds. Round 2 ranks new prompts sampled from round 1's best policy, retrains the reward model on both
snapshots, trains DPO from round 1's best policy, and evaluates round 1's best policy beside its own; the
report shows both rounds. Round 2's best policy must beat round 1's on the gold rubric.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf.core.artifacts import read_manifest
from rlhf.data.pairs import read_pairs
from rlhf.stages import load_config
from rlhf.stages.pipeline import run_pipeline

pytestmark = pytest.mark.slow

def _config(root: Path, home: Path):
    sections = {
        "run": {"root": str(root), "seed": 0},
        "rounds": 2,
        "algorithms": ["dpo"],
        "keep_service": True,
        "label": {"service": {"home": str(home)}},
        "prepare": {"source": {"kind": "demo", "demo_prompts": 600}, "split": {"eval_fraction": 0.15}},
        "sft": {"data": {"demo_examples": 2400}, "train": {"epochs": 2, "save_steps": 100}, "eval": {"prompts": 0}},
        "generate": {"prompts": {"limit": 100}, "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 64}},
        "label_push": {"min_submitted": 2},
        "label_simulate": {"bots": 2, "noise": 0.05, "batch": 20},
        "rm": {"train": {"epochs": 1, "lr": 5.0e-4, "save_steps": 100}, "eval": {"best_of_n_prompts": 0}},
        "dpo": {"data": {"train_pairs": "all"}, "loss": {"beta": 0.1, "sft_weight": 1.0},
                "train": {"lr": 5.0e-4, "epochs": 3, "batch_size": 16, "save_steps": 100}, "eval": {"prompts": 0}},
        "eval": {"generation": {"max_new_tokens": 64}, "best_of_n": {"n": 0}, "stats": {"n_bootstrap": 500}},
    }
    path = root / "pipeline.yaml"
    path.write_text(json.dumps(sections))
    return load_config(path, [], expect_stage="pipeline")


def test_two_rounds_compound(labeling_service, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    run_pipeline(_config(root, labeling_service.home))
    summary = json.loads((root / "pipeline-summary.json").read_text())
    first, second = summary["rounds"]

    # Each round ranks new prompts.
    prompts = [{p.prompt_id for p in read_pairs(r["snapshot"])} for r in (first, second)]
    assert prompts[0] and prompts[1] and not prompts[0] & prompts[1]
    # Round 2's reward model trains on both snapshots (both are inputs of its stage).
    inputs = read_manifest(Path(second["reward_model"]))["inputs"]
    assert {v["path"] for k, v in inputs.items() if k.startswith("pairs")} == {first["snapshot"], second["snapshot"]}
    # Round 2 starts from round 1's best policy, which competes in round 2's evaluation.
    assert first["best"] == "dpo-r1", first["best_rule"]
    dpo_inputs = read_manifest(Path(second["policies"]["dpo-r2"]))["inputs"]
    assert Path(dpo_inputs["policy"]["path"]).resolve().is_relative_to(Path(first["policies"]["dpo-r1"]).resolve())
    results = json.loads((Path(second["eval"]) / "results.json").read_text())
    gold = {(c["policy"], c["baseline"]): c["win_rate"] for c in results["comparisons"] if c["scorer"] == "gold"}
    # Round 2's best policy beats round 1's on the gold rubric: against SFT, and head to head (measured on a
    # 2-core AMD EPYC: 75.6 % against 61.9 % over SFT). DPO trains on every ranked pair of its round: with the
    # best-against-worst pair alone (100 a round) round 2 gained nothing there (68.8 % against 69.9 %).
    assert second["best"] == "dpo-r2", second["best_rule"]
    assert gold[("dpo-r2", "sft")] > gold[("dpo-r1", "sft")]
    assert gold[("dpo-r1", "dpo-r2")] < 0.5
    # The second report shows both rounds side by side.
    html = Path(second["report"]).read_text()
    table = html[html.index("<h2>Rounds side by side</h2>"):]
    assert "dpo-r1" in table[:table.index("</table>")] and "dpo-r2" in table[:table.index("</table>")]

    # Every model folder of the round carries a model card naming its run and its lineage; the pairs open with
    # datasets.load_dataset on their stage folder.
    from datasets import load_dataset
    from huggingface_hub import ModelCard

    from rlhf.core.cards import is_model_folder

    carded = set()
    for manifest_file in root.rglob("manifest.json"):
        manifest = read_manifest(manifest_file.parent)
        for rel in manifest["outputs"]:
            if is_model_folder(manifest_file.parent / rel):
                card = ModelCard.load(manifest_file.parent / rel / "README.md")
                assert manifest["run_id"] in card.text and "## Lineage" in card.text
                assert all(meta["path"] in card.text for meta in manifest["inputs"].values())
                carded.add(manifest["stage"])
    assert {"sft", "rm", "dpo"} <= carded, carded
    snapshot = Path(second["snapshot"])
    pairs = load_dataset(str(snapshot if snapshot.is_dir() else snapshot.parent), "pairs", split="train")
    assert len(pairs) == len(read_pairs(second["snapshot"]))
