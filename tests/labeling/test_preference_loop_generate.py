"""``rlhf generate`` -> ``rlhf label push`` at a small size: candidates sampled from a tiny model reach Argilla with
their metadata kept in the slot map, and the push's lineage leads back to the generate stage."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from rlhf.data.candidates import read_candidates
from rlhf.labeling import iter_records
from rlhf.labeling.loop.common import read_push
from rlhf.labeling.loop.slots import read_slot_map
from rlhf.models.config import TinyModelConfig
from rlhf.models.tiny import build_tiny_model
from rlhf.stages import load_config
from rlhf.stages.generate import run_generate
from rlhf.stages.label_push import run_push

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "label"


def test_generated_candidates_are_pushed_with_their_metadata(labeling_service, tmp_path):
    model = build_tiny_model(TinyModelConfig())
    generated = run_generate(load_config(None, [
        f"run.root={tmp_path}", "prompts.limit=3", f"policies=[{{name: tiny-a, path: {model}}}]",
        "sampling.n=5", "sampling.max_new_tokens=10", "batch_size=3"], expect_stage="generate"))
    rows = read_candidates(generated)
    pushable = [r for r in rows if len({c["text"] for c in r["candidates"] if c["text"].strip()}) >= 4]
    assert pushable, "the tiny model gave no prompt 4 distinct replies"

    push = run_push(load_config(CONFIGS / "push-demo.yaml", [
        f"run.root={tmp_path}", f"candidates={generated}", f"service.home={labeling_service.home}",
        "honeypots.demo=2", f"dataset=generated-{uuid.uuid4().hex[:6]}"]), progress=False)
    info = read_push(push)
    assert info.records == len(pushable) + 2 and info.honeypots == 2
    manifest = json.loads((push / "manifest.json").read_text())
    assert manifest["inputs"]["candidates"]["stage_dir"] == str(generated)

    slot_map = read_slot_map(push)
    by_prompt = {r["prompt_id"]: {c["id"]: c for c in r["candidates"]} for r in rows}
    for slot in (s for s in slot_map.values() if not s.honeypot):
        for cid in slot.slots:
            meta = slot.candidates[cid]
            source = by_prompt[slot.prompt_id][meta.get("generate_id", cid)]
            assert meta["policy"] == "tiny-a" and meta["logprob"] == source["logprob"]
    records = list(iter_records(labeling_service.http(), info.dataset_id, include="responses"))
    assert {r["external_id"] for r in records} == set(slot_map)
    for record in records:
        assert record["fields"] == slot_map[record["external_id"]].fields("prompt", info.slot_fields)
