"""Candidate generation: K content-keyed candidates per prompt with metadata, through the rollout engine."""

from __future__ import annotations

import json

import pytest

from rlhf.core.errors import UserError
from rlhf.data.candidates import candidate_id, read_candidates
from rlhf.models.config import TinyModelConfig
from rlhf.models.tiny import build_tiny_model
from rlhf.stages import load_config
from rlhf.stages.generate import run_generate


def test_generate_candidates_with_metadata(tmp_path, capsys):
    model = build_tiny_model(TinyModelConfig())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Where is order #A1234{i}?",
                                           "metadata": {"intent": "order_status"}}) + "\n" for i in range(5)))
    overrides = [f"run.root={tmp_path / 'runs'}", f"prompts.path={prompts}", "prompts.limit=4",
                 f"policies=[{{name: a, path: {model}}}, {{name: b, path: {model}}}]",
                 "sampling.n=3", "sampling.max_new_tokens=12", "batch_size=3"]
    cfg = load_config(None, overrides, expect_stage="generate")
    out = run_generate(cfg)
    rows = read_candidates(out)
    assert [r["prompt_id"] for r in rows] == ["p0", "p1", "p2", "p3"]
    report = json.loads((out / "report.json").read_text())
    assert report["candidates"] + report["duplicates_collapsed"] == 4 * 2 * 3
    for row in rows:
        assert row["metadata"] == {"intent": "order_status"}
        for cand in row["candidates"]:
            assert cand["id"] == candidate_id(row["prompt_id"], cand["text"])
            assert cand["policy"] in ("a", "b") and cand["sampling"]["n"] == 3
            assert cand["logprob"] <= 0 and 1 <= cand["tokens"] <= 12
        assert len({c["id"] for c in row["candidates"]}) == len(row["candidates"])
    # Same config and inputs: skipped, same folder.
    assert run_generate(cfg) == out
    assert "up to date, skipping" in capsys.readouterr().out


def test_prompt_offset_skips_earlier_prompts_and_names_the_fix_when_none_are_left(tmp_path):
    from rlhf.configs.generate import PromptSource
    from rlhf.stages.generate import _load_prompts

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + "\n" for i in range(5)))
    rows = _load_prompts(PromptSource(path=str(prompts), limit=2, offset=2), seed=0)
    assert [r["id"] for r in rows] == ["p2", "p3"]
    assert [r["id"] for r in _load_prompts(PromptSource(path=str(prompts), limit=9, offset=4), seed=0)] == ["p4"]
    with pytest.raises(UserError, match="holds 5 prompts, all before prompts.offset=5"):
        _load_prompts(PromptSource(path=str(prompts), limit=2, offset=5), seed=0)
