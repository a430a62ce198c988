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


def test_human_replies_from_an_escalation_join_the_candidates_through_prepare(tmp_path):
    """A feedback export's prompt carries the support agent's reply; after ``prepare`` it is one of the
    prompt's candidates (policy 'human'), and ``prompts.human_replies=false`` leaves it out."""
    from rlhf.stages.prepare import run_prepare

    model = build_tiny_model(TinyModelConfig())
    export = tmp_path / "export.jsonl"
    human = "Hello Maya, your parcel left the warehouse today and arrives on Friday. Thank you!"
    export.write_text("".join(json.dumps({"id": f"f{i}", "prompt": f"Where is my order #K4821{i}?", "metadata": {
        "source": "feedback", "signals": {"escalate": 1}, "human_replies": [human] if i == 0 else []}}) + "\n"
        for i in range(6)))
    prepared = run_prepare(load_config(None, [f"run.root={tmp_path / 'runs'}", "source.kind=file",
                                              f"source.path={export}", "split.eval_fraction=0"],
                                       expect_stage="prepare"))
    common = [f"run.root={tmp_path / 'runs'}", f"prompts.path={prepared / 'prompts' / 'train.jsonl'}",
              f"policies=[{{name: sft, path: {model}}}]", "sampling.n=2", "sampling.max_new_tokens=8"]
    rows = read_candidates(run_generate(load_config(None, common, expect_stage="generate")))
    humans = [(r["prompt"], c["text"]) for r in rows for c in r["candidates"] if c["policy"] == "human"]
    assert humans == [("Where is my order #K48210?", human)]
    assert all(r["metadata"]["source"] == "feedback" for r in rows)
    rows = read_candidates(run_generate(load_config(None, [*common, "prompts.human_replies=false"],
                                                    expect_stage="generate")))
    assert not any(c["policy"] == "human" for r in rows for c in r["candidates"])
