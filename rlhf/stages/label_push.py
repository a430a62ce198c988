"""``rlhf label push`` (stage ``label_push``): one collection round (a generate stage's candidates) as one
Argilla dataset.

Method
------
1. **Plan** (deterministic from the config and the inputs): every prompt's text and candidates are PII
   scrubbed again (:func:`rlhf.data.pii.load_scrubber`; model output can echo personal data from the
   prompt); candidates equal after scrubbing collapse, empty ones are dropped, and a prompt left with
   fewer than K candidates (K = the template's response slots) is skipped and counted. With more than K, K
   are drawn at random (seeded per prompt). Candidate ids are content keys (``candidate_id``); a record's
   key is the hash of its content (:func:`~rlhf.labeling.loop.slots.record_key`). Slots are shuffled per
   record, honeypots (:mod:`rlhf.labeling.loop.honeypots`: a file with its own ranks, and/or demo-world items
   ordered by ``honeypots.rubric``, which must be the annotators' rubric) are added and the records are put in
   a seeded random order.
2. **Dataset**: created from the template when missing (plain-text fields, the ranking question with ties,
   the optional rating, flags and rationale, the versioned guidelines, task distribution ``overlap`` with
   ``min_submitted`` annotators per record). An existing dataset of that name must have the template's fields
   and hold only records of this plan; records it already holds keep the slot order shown there.
3. **Slot map** (``slots.jsonl``) is written before any record is logged, so no record is ever in Argilla
   without its map. Records the dataset lacks are then written with the bulk *upsert* keyed by external id
   (``PUT /api/v1/datasets/{id}/records/bulk``), at most ``batch_size`` (<= 500) per request, with a
   progress bar. An upsert is idempotent: a request retried after a timeout, or a push killed mid-way and
   run again, never duplicates a record. SQLite's "database is locked" answers are retried with back-off.
4. ``push.json`` (dataset, id, layout, counts) and ``guidelines.md`` (the exact text annotators got) are
   written and the run folder is marked complete; running the push again finds it complete and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from rlhf.configs.label import LabelPushConfig
from rlhf.core.artifacts import StageRun, atomic_write_json, atomic_write_text
from rlhf.core.errors import UserError
from rlhf.core.runs import open_stage
from rlhf.data.candidates import read_candidates
from rlhf.data.pii import load_scrubber
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import PUSH_INFO, connect
from rlhf.labeling.loop.honeypots import demo_honeypots, honeypot_records, load_honeypots, load_rubric
from rlhf.labeling.loop.push import (
    candidates_file,
    check_existing_dataset,
    log_records_idempotent,
    plan_records,
    server_records,
    template_layout,
)
from rlhf.labeling.loop.slots import SLOT_MAP, adopt_server_order, write_slot_map
from rlhf.labeling.templates import create_dataset, find_dataset, load_template

__all__ = ["LabelPushConfig", "open_push", "run_push"]


def open_push(cfg: LabelPushConfig) -> StageRun:
    """The push's run (folder and completeness) for ``cfg``, without contacting Argilla."""
    inputs: dict[str, str | Path] = {"candidates": candidates_file(cfg.candidates),
                                     "template": str(load_template(cfg.template).source)}
    if cfg.honeypots.path:
        inputs["honeypots"] = cfg.honeypots.path
    return open_stage(cfg, inputs=inputs)


def run_push(cfg: LabelPushConfig, http: ArgillaHTTP | None = None, progress: bool = True) -> Path:
    """Push the round (or find it complete); returns the push's run folder (see the module docstring)."""
    candidates = candidates_file(cfg.candidates)
    template = load_template(cfg.template)
    prompt_field, slot_fields, question = template_layout(template)
    guidelines = template.guidelines_text()
    run = open_push(cfg)
    if run.complete:
        print(f"label push: up to date, skipping ({run.dir})")
        return run.dir
    dataset = cfg.dataset or f"{cfg.run.name}-{run.fingerprint[:8]}"
    min_submitted = cfg.min_submitted or template.min_submitted
    scrub = load_scrubber(cfg.scrubber)
    records, skipped, pii = plan_records(read_candidates(candidates), len(slot_fields), cfg.run.seed, scrub,
                                         cfg.max_prompts)
    pots = []
    if cfg.honeypots.path:
        pots += load_honeypots(cfg.honeypots.path, len(slot_fields))
    if cfg.honeypots.demo:
        pots += demo_honeypots(cfg.honeypots.demo, len(slot_fields), cfg.honeypots.seed, cfg.honeypots.min_gap,
                               rubric=load_rubric(cfg.honeypots.rubric))
    records += honeypot_records(pots, cfg.run.seed, scrub)
    random.Random(f"{cfg.run.seed}:order").shuffle(records)
    if not records:
        raise UserError(f"no prompt in {candidates} has {len(slot_fields)} distinct candidates ({skipped}); "
                        f"generate more per prompt (sampling.n) or use a template with fewer slots")
    keys = [r.external_id for r in records]
    if len(set(keys)) != len(keys):
        raise UserError(f"{candidates} holds the same prompt and candidates twice; de-duplicate the prompts")

    client = http if http is not None else connect(cfg.argilla, cfg.service)
    try:
        with run.lock():
            dataset_id = find_dataset(client, dataset, cfg.workspace)
            if dataset_id is None:
                dataset_id = create_dataset(client, template, dataset, cfg.workspace, min_submitted=min_submitted)
            else:
                check_existing_dataset(client, dataset_id, dataset, [prompt_field, *slot_fields], min_submitted)
            stored = server_records(client, dataset_id)
            foreign = set(stored) - set(keys)
            if foreign:
                raise UserError(f"dataset '{dataset}' holds {len(foreign)} records that are not in this round; "
                                "push into a new dataset (set dataset=<new name>)")
            records = [adopt_server_order(r, stored[r.external_id], slot_fields) if r.external_id in stored else r
                       for r in records]
            write_slot_map(run.path(SLOT_MAP), records)
            names = {m.name for m in template.metadata}
            missing = [{"external_id": r.external_id, "fields": r.fields(prompt_field, slot_fields),
                        "metadata": {k: v for k, v in (("round", dataset), ("prompt_id", r.prompt_id)) if k in names}}
                       for r in records if r.external_id not in stored]
            log_records_idempotent(client, dataset_id, missing, cfg.batch_size, progress)
            total = client.get(f"/api/v1/datasets/{dataset_id}/records", params={"limit": 1})["total"]
            if total != len(records):
                raise UserError(f"dataset '{dataset}' holds {total} records after the push, expected {len(records)}; "
                                "another push may be writing into it: run this push again when it is done")
            info = {
                "dataset": dataset, "dataset_id": dataset_id, "workspace": cfg.workspace, "api_url": client.api_url,
                "template": template.name, "prompt_field": prompt_field, "slot_fields": list(slot_fields),
                "ranking_question": question, "min_submitted": min_submitted, "records": len(records),
                "honeypots": len(pots), "honeypot_rubric": cfg.honeypots.rubric if cfg.honeypots.demo else None,
                "prompts_skipped": skipped, "pii_replaced": pii,
                "logged_now": len(missing), "already_present": len(records) - len(missing),
                "guidelines_sha256": hashlib.sha256(guidelines.encode("utf-8")).hexdigest(),
            }
            atomic_write_text(run.path("guidelines.md"), guidelines)
            atomic_write_json(run.path(PUSH_INFO), info)
            run.finish([SLOT_MAP, PUSH_INFO, "guidelines.md"],
                       metrics={"label/records": len(records), "label/honeypots": len(pots),
                                "label/logged_now": len(missing)})
    finally:
        if http is None:
            client.close()
    print(f"label push: {len(records)} records ({len(pots)} honeypots, {len(missing)} logged now) in dataset "
          f"'{dataset}' of workspace '{cfg.workspace}', {min_submitted} annotators per record -> {run.dir}")
    if skipped or pii:
        print(f"label push: skipped {json.dumps(skipped)}; PII spans replaced {json.dumps(pii)}")
    return run.dir
