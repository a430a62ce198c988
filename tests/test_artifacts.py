"""Run artifacts: deterministic stage folders, completion markers, skipping, hashing and lineage."""

from __future__ import annotations

import json
import os

import pytest

from rlhf.core.artifacts import (
    MANIFEST,
    atomic_write_text,
    begin_stage,
    find_stage_dir,
    hash_path,
    lineage,
    read_manifest,
)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_same_config_and_inputs_give_same_folder(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("x\n")
    a = begin_stage("sft", {"lr": 1}, {"corpus": data}, tmp_path / "runs")
    b = begin_stage("sft", {"lr": 1}, {"corpus": data}, tmp_path / "runs")
    c = begin_stage("sft", {"lr": 2}, {"corpus": data}, tmp_path / "runs")
    assert a.dir == b.dir and a.dir != c.dir
    data.write_text("y\n")
    d = begin_stage("sft", {"lr": 1}, {"corpus": data}, tmp_path / "runs")
    assert d.dir != a.dir


def test_finish_requires_every_output(tmp_path):
    run = begin_stage("sft", {}, {}, tmp_path)
    run.dir.mkdir(parents=True)
    (run.dir / "model").mkdir()
    with pytest.raises(RuntimeError, match="did not produce"):
        run.finish(["model", "metrics.json"])
    assert not run.complete
    (run.dir / "metrics.json").write_text("{}")
    run.finish(["model", "metrics.json"])
    assert run.complete
    again = begin_stage("sft", {}, {}, tmp_path)
    assert again.complete


def test_manifest_records_provenance(tmp_path):
    data = tmp_path / "corpus.jsonl"
    data.write_text("hello\n")
    run = begin_stage("prepare", {"k": 1}, {"corpus": data}, tmp_path / "runs", seed=7)
    run.dir.mkdir(parents=True)
    (run.dir / "out.txt").write_text("o")
    manifest = run.finish(["out.txt"])
    for key in ("config", "versions", "git", "seed", "inputs", "outputs", "fingerprint"):
        assert key in manifest
    assert manifest["seed"] == 7
    assert manifest["inputs"]["corpus"]["hash"] == hash_path(data)
    assert "torch" in manifest["versions"]
    assert json.loads((run.dir / MANIFEST).read_text()) == read_manifest(run.dir)


def test_lineage_walks_back_through_stage_inputs(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("c\n")
    first = begin_stage("prepare", {"a": 1}, {"raw": corpus}, tmp_path / "runs")
    first.dir.mkdir(parents=True)
    (first.dir / "prompts.jsonl").write_text("p\n")
    first.finish(["prompts.jsonl"])
    second = begin_stage("sft", {"b": 2}, {"prompts": first.dir / "prompts.jsonl"}, tmp_path / "runs")
    second.dir.mkdir(parents=True)
    (second.dir / "model").mkdir()
    (second.dir / "model" / "w.bin").write_bytes(b"\x00")
    second.finish(["model"])
    chain = lineage(second.dir / "model" / "w.bin")
    assert [c["stage"] for c in chain] == ["sft", "prepare"]
    assert chain[1]["inputs"]["raw"]["hash"] == hash_path(corpus)
    assert chain[0]["inputs"]["prompts"]["stage_dir"] == str(first.dir)
    assert find_stage_dir(second.dir / "model") == second.dir


def test_hash_of_completed_output_comes_from_manifest(tmp_path):
    run = begin_stage("x", {}, {}, tmp_path)
    run.dir.mkdir(parents=True)
    (run.dir / "a.txt").write_text("a")
    run.finish(["a.txt"])
    recorded = read_manifest(run.dir)["outputs"]["a.txt"]
    assert hash_path(run.dir / "a.txt") == recorded


def test_lock_refuses_a_live_writer_and_takes_over_a_dead_one(tmp_path):
    run = begin_stage("x", {}, {}, tmp_path)
    run.dir.mkdir(parents=True)
    (run.dir / ".lock").write_text("999999999")  # no such process: a crashed writer
    with run.lock():
        assert (run.dir / ".lock").read_text() == str(os.getpid())
    assert not (run.dir / ".lock").exists()
    (run.dir / ".lock").write_text(str(os.getppid()))  # a live process
    with pytest.raises(RuntimeError, match="is being written by process"), run.lock():
        pass


def test_lineage_outside_a_stage_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not inside a completed stage folder"):
        lineage(tmp_path)


def test_rerunning_an_upstream_stage_invalidates_downstream(tmp_path):
    import shutil

    def upstream():
        run = begin_stage("a", {}, {}, tmp_path)
        run.dir.mkdir(parents=True, exist_ok=True)
        (run.dir / "out.txt").write_text("same bytes every time")
        run.finish(["out.txt"])
        return run

    first = upstream()
    down1 = begin_stage("b", {}, {"x": first.dir / "out.txt"}, tmp_path)
    assert begin_stage("b", {}, {"x": first.dir / "out.txt"}, tmp_path).dir == down1.dir
    shutil.rmtree(first.dir)
    second = upstream()
    assert second.dir == first.dir  # same config and inputs: same folder
    down2 = begin_stage("b", {}, {"x": second.dir / "out.txt"}, tmp_path)
    assert down2.dir != down1.dir  # but a new run of it: downstream re-runs
