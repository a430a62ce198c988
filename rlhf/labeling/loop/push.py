"""Building blocks of ``rlhf label push`` (the stage's recipe is :mod:`rlhf.stages.label_push`, which
describes the method): the ranking layout of a template, the record plan, the records a dataset holds, the
idempotent bulk upsert and the checks on an existing dataset.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlhf.core.errors import UserError
from rlhf.data.candidates import candidate_id
from rlhf.data.pii import ScrubResult, run_scrubber
from rlhf.labeling.http import ArgillaAPIError, ArgillaHTTP
from rlhf.labeling.loop.slots import SlotRecord, record_key, shuffle_slots
from rlhf.labeling.templates import DatasetTemplate

__all__ = ["candidates_file", "check_existing_dataset", "log_records_idempotent", "plan_records", "server_records",
           "template_layout"]

BUSY_RETRIES = 6
PAGE = 1000
CANDIDATE_META = ("policy", "logprob", "tokens", "finished", "seed")


def template_layout(template: DatasetTemplate) -> tuple[str, tuple[str, ...], str]:
    """(prompt field, response slot fields in slot order, ranking question) of a ranking template."""
    rankings = [q for q in template.questions if q.type == "ranking"]
    if len(rankings) != 1:
        raise UserError(f"template '{template.name}' must have exactly one ranking question, has {len(rankings)}")
    slots = tuple(o.value for o in rankings[0].options)
    names = [f.name for f in template.fields]
    if "prompt" not in names or any(s not in names for s in slots):
        raise UserError(f"template '{template.name}' needs a 'prompt' field and one field per ranking option "
                        f"({', '.join(slots)})")
    return "prompt", slots, rankings[0].name


def _scrub(scrub: Callable[[str], ScrubResult | str], text: str, counts: Counter[str]) -> str:
    result = run_scrubber(scrub, text)
    counts.update(result.counts)
    return result.text


def plan_records(rows: Iterable[dict[str, Any]], k: int, seed: int, scrub: Callable[[str], ScrubResult | str],
                 max_prompts: int = 0) -> tuple[list[SlotRecord], dict[str, int], dict[str, int]]:
    """Slot-map records of the candidate rows (method step 1); also (skipped prompts by reason, PII counts)."""
    records: list[SlotRecord] = []
    skipped: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    for row in rows:
        if max_prompts and len(records) >= max_prompts:
            break
        prompt = _scrub(scrub, str(row["prompt"]), pii)
        texts: dict[str, str] = {}
        meta: dict[str, dict[str, Any]] = {}
        for cand in row.get("candidates", []):
            text = _scrub(scrub, str(cand["text"]), pii)
            cid = candidate_id(row["prompt_id"], text)
            if not text.strip() or cid in texts:
                skipped["empty_or_duplicate_candidates"] += 1
                continue
            texts[cid] = text
            meta[cid] = {key: cand[key] for key in CANDIDATE_META if key in cand}
            if cand.get("id") and cand["id"] != cid:
                meta[cid]["generate_id"] = cand["id"]  # the text changed when scrubbed
        if len(texts) < k:
            skipped["prompts_with_fewer_than_k"] += 1
            continue
        chosen = sorted(texts)
        if len(chosen) > k:
            chosen = sorted(random.Random(f"{seed}:select:{row['prompt_id']}").sample(chosen, k))
        key = record_key(prompt, [texts[c] for c in chosen])
        records.append(SlotRecord(
            external_id=key, prompt_id=str(row["prompt_id"]), prompt=prompt, slots=shuffle_slots(chosen, seed, key),
            texts={c: texts[c] for c in chosen}, candidates={c: meta[c] for c in chosen},
        ))
    return records, dict(skipped), dict(pii)


def server_records(http: ArgillaHTTP, dataset_id: str) -> dict[str, dict[str, Any]]:
    """external id -> fields of every record the dataset holds."""
    out: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        items = http.get(f"/api/v1/datasets/{dataset_id}/records", params={"offset": offset, "limit": PAGE})["items"]
        for item in items:
            out[str(item.get("external_id"))] = item["fields"]
        if len(items) < PAGE:
            return out
        offset += len(items)


def log_records_idempotent(http: ArgillaHTTP, dataset_id: str, records: list[dict[str, Any]], batch_size: int,
                           progress: bool = True) -> int:
    """Upsert ``records`` (keyed by ``external_id``) in batches of at most ``batch_size``; returns how many."""
    if not 1 <= batch_size <= 500:
        raise UserError(f"batch_size {batch_size} is outside 1..500 (Argilla's bulk limit)")
    bar = tqdm(total=len(records), desc="push records", unit="record", disable=not progress)
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        for attempt in range(BUSY_RETRIES + 1):
            try:
                http.put(f"/api/v1/datasets/{dataset_id}/records/bulk", json={"items": batch})
                break
            except ArgillaAPIError as err:  # SQLite rolled the transaction back: sending it again is safe
                if err.status != 500 or "database is locked" not in str(err.detail) or attempt == BUSY_RETRIES:
                    raise
                time.sleep(0.1 * 2**attempt)
        bar.update(len(batch))
    bar.close()
    return len(records)


def check_existing_dataset(http: ArgillaHTTP, dataset_id: str, name: str, fields: list[str], min_submitted: int) -> None:
    """An existing dataset must have the template's fields and the same annotators per record."""
    present = {f["name"] for f in http.get(f"/api/v1/datasets/{dataset_id}/fields")["items"]}
    if not set(fields) <= present:
        raise UserError(f"dataset '{name}' exists without the fields {sorted(set(fields) - present)}; "
                        "it was made from another template: push into a new dataset (set dataset=<new name>)")
    distribution = http.get(f"/api/v1/datasets/{dataset_id}").get("distribution") or {}
    if int(distribution.get("min_submitted", min_submitted)) != min_submitted:
        raise UserError(f"dataset '{name}' asks {distribution.get('min_submitted')} annotators per record, the "
                        f"config {min_submitted}; keep min_submitted={distribution.get('min_submitted')} "
                        "or use a new dataset")


def candidates_file(path: str | None) -> Path:
    """The candidates file a push reads: ``path`` itself, or ``candidates.jsonl`` in a generate stage folder."""
    if not path:
        raise UserError("push needs candidates=<generate stage folder> (from 'rlhf generate')")
    file = Path(path)
    file = file / "candidates.jsonl" if file.is_dir() else file
    if not file.is_file():
        raise UserError(f"{file} does not exist; run 'rlhf generate' and pass its run folder as candidates=")
    return file
