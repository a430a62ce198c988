"""The prepare stage end to end: planted PII never reaches the outputs, dedup and the split rule hold,
HH import runs on the real data, bad input fails with one line naming the line number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.stages import load_config
from rlhf.stages.prepare import run_prepare
from tests.test_pii import PLANTED


def _config(tmp_path, **source):
    return load_config(None, [f"run.root={tmp_path / 'runs'}", *[f"source.{k}={v}" for k, v in source.items()]],
                       expect_stage="prepare")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_planted_pii_never_reaches_outputs(tmp_path):
    rows = [{"prompt": sentence, "note": sentence} for _, _, sentence in
            [(k, v, t.format(v) if "{}" in t else t) for k, v, t in PLANTED]]
    src = tmp_path / "planted.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_prepare(_config(tmp_path, kind="file", path=src))
    written = (out / "prompts" / "train.jsonl").read_text() + (out / "prompts" / "eval.jsonl").read_text()
    for kind, value, _ in PLANTED:
        assert value not in written, f"planted {kind} survived: {value}"
    report = json.loads((out / "report.json").read_text())
    assert sum(report["pii_replaced"].values()) >= len(PLANTED)


def test_dedup_and_split_keep_near_duplicates_together(tmp_path):
    base = [f"Where is my order number {i} for the {w} I bought last week in the spring sale?"
            for i, w in enumerate(["lamp", "kettle", "chair", "desk", "rug", "vase", "mirror", "clock"] * 25)]
    rows = base + [base[0], base[0].upper(), base[1] + "!!"]  # exact, case-only and near duplicates
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
    out = run_prepare(_config(tmp_path, kind="file", path=src))
    report = json.loads((out / "report.json").read_text())
    assert report["dedup"]["removed_exact"] >= 2 and report["dedup"]["removed_near"] >= 1
    train = {r["prompt"] for r in _read(out / "prompts" / "train.jsonl")}
    evals = {r["prompt"] for r in _read(out / "prompts" / "eval.jsonl")}
    assert not train & evals and len(evals) > 0

    # With dedup off, near-duplicates are kept but still land on the same side of the split.
    cfg = load_config(None, [f"run.root={tmp_path / 'runs2'}", "source.kind=file", f"source.path={src}",
                             "dedup.enabled=false"], expect_stage="prepare")
    out2 = run_prepare(cfg)
    train2 = [r["prompt"] for r in _read(out2 / "prompts" / "train.jsonl")]
    evals2 = [r["prompt"] for r in _read(out2 / "prompts" / "eval.jsonl")]
    side = {p: "train" for p in train2} | {p: "eval" for p in evals2}
    assert side[base[1]] == side[base[1] + "!!"]


def test_rerun_is_skipped_and_outputs_unchanged(tmp_path, capsys):
    first = run_prepare(_config(tmp_path, demo_prompts=50))
    before = (first / "manifest.json").read_text()
    second = run_prepare(_config(tmp_path, demo_prompts=50))
    assert first == second and (second / "manifest.json").read_text() == before
    assert "up to date, skipping" in capsys.readouterr().out


def test_hh_import_on_shared_data(tmp_path, hh_harmless_test_file):
    out = run_prepare(_config(tmp_path, kind="hh", path=hh_harmless_test_file))
    train = _read(out / "pairs" / "train.jsonl")
    evals = _read(out / "pairs" / "eval.jsonl")
    assert len(train) + len(evals) == 2303
    row = train[0]
    assert row["prompt"].endswith("\n\nAssistant:") and row["chosen"] and row["rejected"]
    assert row["prompt_messages"][0]["role"] == "user" and row["chosen_messages"][0]["role"] == "assistant"
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}


def test_bad_input_names_the_line(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "fine"}\n{"prompt": "   "}\n')
    proc = subprocess.run([sys.executable, "-m", "rlhf.cli", "prepare", f"run.root={tmp_path}", "source.kind=file",
                           f"source.path={src}"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("prepare/*/manifest.json"))


def test_source_contradiction_is_an_error(tmp_path):
    with pytest.raises(Exception, match="source.kind=file needs source.path"):
        _config(tmp_path, kind="file")
