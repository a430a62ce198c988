"""``rlhf prepare``: turn raw prompts (or HH-RLHF pairs) into clean, scrubbed, split datasets.

Prompt sets (``source.kind: file`` for JSONL, CSV, Parquet or a saved HF dataset; ``demo`` for the demo
world) go through, in order: schema checks with line numbers, normalisation, PII scrubbing (before anything
can reach annotators), exact and near-duplicate removal, and a deterministic train/eval split that keeps
near-duplicates on one side. HH-RLHF transcripts (``source.kind: hh``) become ``prompt``/``chosen``/
``rejected`` as text and as chat messages, scrubbed, deduplicated by prompt and split the same way.

Outputs: ``prompts/train.jsonl`` and ``prompts/eval.jsonl`` (``id``, ``prompt``, ``metadata``) or
``pairs/train.jsonl`` and ``pairs/eval.jsonl`` for HH, plus ``report.json`` (what was removed and why).
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.configs.prepare import PrepareConfig
from rlhf.core.artifacts import atomic_write_json, atomic_write_text
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.data.dedup import dedup_records, split_records
from rlhf.data.pii import load_scrubber
from rlhf.data.prompts import PromptRecord, load_prompt_records, normalize_text, prompt_id, scrub_records

__all__ = ["PrepareConfig", "run_prepare"]


def _demo_records(n: int, seed: int) -> list[PromptRecord]:
    from rlhf.world.demo import generate_prompts

    out = []
    for number, prompt in enumerate(generate_prompts(n, seed=seed), 1):
        text = normalize_text(prompt.text)
        out.append(PromptRecord(id=prompt_id(text), prompt=text, metadata={"intent": prompt.intent}, source_line=number))
    return out


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _prepare_prompts(cfg: PrepareConfig, out: Path) -> dict:
    if cfg.source.kind == "demo":
        records = _demo_records(cfg.source.demo_prompts, cfg.run.seed)
    else:
        records = load_prompt_records(cfg.source.path, prompt_field=cfg.source.prompt_field)
    report: dict = {"loaded": len(records)}
    records, report["pii_replaced"] = scrub_records(records, load_scrubber(cfg.pii))
    if cfg.dedup.enabled:
        result = dedup_records(records, near=cfg.dedup.near, threshold=cfg.dedup.threshold)
        records = result.kept
        report["dedup"] = result.summary()
        report["removed"] = [{"line": r.record.source_line, "reason": r.reason, "duplicate_of": r.duplicate_of,
                              "similarity": round(r.similarity, 3)} for r in result.removed]
    split = split_records(records, eval_fraction=cfg.split.eval_fraction, seed=cfg.run.seed, threshold=cfg.dedup.threshold)
    for name, part in (("train", split.train), ("eval", split.eval)):
        atomic_write_text(out / "prompts" / f"{name}.jsonl",
                          _jsonl([{"id": r.id, "prompt": r.prompt, "metadata": dict(r.metadata)} for r in part]))
    report["split"] = {"train": len(split.train), "eval": len(split.eval),
                       "train_clusters": split.train_clusters, "eval_clusters": split.eval_clusters}
    return report


def _prepare_hh(cfg: PrepareConfig, out: Path) -> dict:
    from rlhf.data.hh import load_hh_pairs

    pairs, hh_report = load_hh_pairs(cfg.source.path, scrubber=load_scrubber(cfg.pii))
    rows = [pair.as_row() for pair in pairs]
    report: dict = {"import": hh_report.summary()}
    # Split (and deduplicate) by the prompt transcript, so one conversation never lands on both sides.
    keyed = [PromptRecord(id=prompt_id(normalize_text(r["prompt"])), prompt=normalize_text(r["prompt"]),
                          metadata={"row": i}, source_line=r["source_line"]) for i, r in enumerate(rows)]
    if cfg.dedup.enabled:
        seen: set[tuple[str, str, str]] = set()
        kept = []
        for record, row in zip(keyed, rows):
            key = (record.id, row["chosen"], row["rejected"])
            if key not in seen:
                seen.add(key)
                kept.append(record)
        report["dedup"] = {"kept": len(kept), "removed_exact": len(keyed) - len(kept)}
        keyed = kept
    split = split_records(keyed, eval_fraction=cfg.split.eval_fraction, seed=cfg.run.seed, threshold=cfg.dedup.threshold)
    for name, part in (("train", split.train), ("eval", split.eval)):
        atomic_write_text(out / "pairs" / f"{name}.jsonl", _jsonl([rows[r.metadata["row"]] for r in part]))
    report["split"] = {"train": len(split.train), "eval": len(split.eval)}
    return report


def run_prepare(cfg: PrepareConfig) -> Path:
    """Run (or skip, when already complete) the prepare stage; returns the stage folder."""
    inputs = {"source": cfg.source.path} if cfg.source.path else {}
    if cfg.source.path and not Path(cfg.source.path).exists():
        raise UserError(f"source.path {cfg.source.path} does not exist; check the path")
    run = open_stage(cfg, inputs=inputs)
    if run.complete:
        print(f"prepare: up to date, skipping ({run.dir})")
        return run.dir
    with run.lock():
        if cfg.source.kind == "hh":
            report = _prepare_hh(cfg, run.dir)
            outputs = ["pairs/train.jsonl", "pairs/eval.jsonl", "report.json"]
        else:
            report = _prepare_prompts(cfg, run.dir)
            outputs = ["prompts/train.jsonl", "prompts/eval.jsonl", "report.json"]
        atomic_write_json(run.path("report.json"), report)
        run.finish(outputs, metrics={"prepare/" + k: v for k, v in report["split"].items()})
    print(f"prepare: {report['split']} -> {run.dir}")
    return run.dir
