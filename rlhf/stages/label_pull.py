"""``rlhf label pull`` (stage ``label_pull``): a versioned snapshot of a round: raw responses, training pairs and a quality report.

Method
------
1. **Read** every record with its responses through the raw API (``iter_records``, owner or admin key).
   Ranks come from the stored ``rank`` of each option (``ranking_of``), never from the SDK's ranking
   reader, which drops them. Drafts are work in progress and are left out (counted).
2. **Version**: the snapshot's run folder is ``<run.root>/label_pull/<run.name>-<fingerprint>/``, the
   fingerprint covering the config, the push folder (an input, so ``rlhf lineage`` leads from pairs to the
   candidates and the policy that wrote them) and a digest of the server's responses (id, status,
   ``updated_at``). Pulling again with nothing new finds the complete folder and does nothing; anything new
   gives a new folder. A finished snapshot is never written again.
3. **Incremental**: the newest earlier snapshot of the same push is the baseline. Responses whose id and
   ``updated_at`` it already holds are taken over from it unchanged (when it used the same pseudonym key
   and scrubber); only new or changed ones are processed (slots mapped back to candidates, annotator
   pseudonymised, free text re-scrubbed for PII).
   ``snapshot.json`` lists what is new, changed and gone since the baseline. Every snapshot still holds
   every current response, so it stands alone for training.
4. **Aggregate**: each submitted ranking becomes a :class:`~rlhf.preferences.votes.RankingVote` over
   candidate ids (slot order kept for the position-bias test). The quality report
   (:func:`~rlhf.preferences.quality.quality_report`, honeypot answers from the slot map) flags careless
   and position-biased annotators; votes of annotators carrying a flag in ``exclude_flagged`` are left
   out of the pairs (never out of the report or the raw responses), and each excluded annotator is named
   on one line with the measure that flagged it and the threshold it fell below. A pull left without pairs
   says how many annotators were excluded and why. Per record, the remaining non-honeypot
   votes are aggregated (``majority``, ``borda`` or ``bradley_terry``); ties and pairs at or below
   ``min_agreement`` never become training pairs.

Outputs: ``responses.jsonl`` (one row per response, annotators pseudonymised), ``pairs.jsonl`` (the pairs
snapshot format of :mod:`rlhf.data.pairs`), ``quality_report.json`` (``QualityReport.to_dict()``) and
``snapshot.json`` (counts, changes, settings).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections import Counter
from pathlib import Path

from rlhf.configs.label import LabelPullConfig
from rlhf.core.artifacts import atomic_write_json, atomic_write_text, begin_stage
from rlhf.core.errors import UserError
from rlhf.core.runs import fingerprint_config
from rlhf.data.pairs import write_pairs
from rlhf.data.pii import load_scrubber
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import connect, load_pseudonym_key, pseudonym, read_push
from rlhf.labeling.loop.pull import (
    QUALITY,
    RESPONSES,
    SNAPSHOT,
    build_pairs,
    compatible_snapshot,
    exclusion_line,
    exclusions,
    find_previous,
    no_pairs_message,
    read_rows,
    response_row,
    responses_digest,
    usernames,
    votes_from_rows,
)
from rlhf.labeling.loop.slots import read_slot_map
from rlhf.labeling.responses import iter_records
from rlhf.preferences.quality import quality_report

__all__ = ["LabelPullConfig", "run_pull"]


def run_pull(cfg: LabelPullConfig, http: ArgillaHTTP | None = None) -> Path:
    """Write a snapshot of the push's dataset (or find it written); returns its folder (module docstring)."""
    push = read_push(cfg.push)
    slot_map = read_slot_map(push.folder)
    scrub = load_scrubber(cfg.scrubber)
    key = load_pseudonym_key(cfg.service)
    client = http if http is not None else connect(cfg.argilla, cfg.service)
    try:
        records = list(iter_records(client, push.dataset_id, include="responses"))
        users = usernames(client)
    finally:
        if http is None:
            client.close()
    unknown = [r.get("external_id") for r in records if r.get("external_id") not in slot_map]
    if unknown:
        raise UserError(f"{len(unknown)} records of dataset '{push.dataset}' are not in the slot map of {push.folder} "
                        f"(first: {unknown[0]}); pull with the push folder that created the dataset")
    digest = responses_digest(records)
    run = begin_stage(stage=cfg.stage, config={**fingerprint_config(cfg), "responses_digest": digest},
                      inputs={"push": push.folder}, root=cfg.run.root, name=cfg.run.name, seed=cfg.run.seed)
    if run.complete:
        print(f"label pull: nothing new since {run.dir}; skipping")
        return run.dir
    previous = find_previous(Path(cfg.run.root).resolve(), push.folder)
    key_id = hashlib.sha256(b"pseudonym-key-id:" + key).hexdigest()[:12]
    known = read_rows(previous) if previous and compatible_snapshot(previous, key_id, cfg.scrubber) else {}

    rows, taken_over, drafts = [], 0, 0
    for record in records:
        slot = slot_map[record["external_id"]]
        for response in record.get("responses") or []:
            if response["status"] == "draft":
                drafts += 1
                continue
            old = known.get((str(response["id"]), str(response.get("updated_at"))))
            if old is not None:
                rows.append(old)
                taken_over += 1
                continue
            name = users.get(str(response["user_id"]), str(response["user_id"]))
            rows.append(response_row(response, slot, push, pseudonym(name, key), scrub))
    rows.sort(key=lambda r: (r["record"], r["annotator"], r["response_id"]))
    old_ids = {rid for rid, _ in known}
    now_ids = {r["response_id"] for r in rows}
    changes = {"new": len(now_ids - old_ids), "changed": len(rows) - taken_over - len(now_ids - old_ids),
               "unchanged": taken_over, "removed": len(old_ids - now_ids)}

    votes = votes_from_rows(rows)
    answers = {ext: s.answer for ext, s in slot_map.items() if s.honeypot and s.answer}
    report = quality_report(votes, honeypot_answers=answers, bias_p=cfg.quality.bias_p,
                            careless_agreement=cfg.quality.careless_agreement,
                            honeypot_accuracy=cfg.quality.honeypot_accuracy)
    why_excluded = exclusions(report, cfg.exclude_flagged)
    for name, reasons in why_excluded.items():
        print(exclusion_line(name, reasons))
    excluded = set(why_excluded)
    pairs = build_pairs(votes, slot_map, cfg.aggregation, cfg.min_agreement, cfg.min_votes, excluded,
                        {"dataset": push.dataset, "snapshot": run.dir.name})
    if not pairs:
        raise UserError(no_pairs_message(len(votes), push.dataset, why_excluded, report.annotators))
    statuses = Counter(r["status"] for r in rows)
    summary = {
        "dataset": push.dataset, "dataset_id": push.dataset_id, "push": str(push.folder),
        "previous": str(previous) if previous else None, "pulled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "responses": {"total": len(rows), "submitted": statuses["submitted"], "discarded": statuses["discarded"],
                      "drafts_left_out": drafts, "invalid": sum(1 for r in rows if r["invalid"])},
        "changes": changes, "votes": len(votes), "pairs": len(pairs),
        "records_with_pairs": len({p.provenance["record"] for p in pairs}),
        "aggregation": cfg.aggregation, "min_agreement": cfg.min_agreement, "min_votes": cfg.min_votes,
        "excluded_annotators": sorted(excluded),
        "excluded_votes": sum(1 for v in votes if v.annotator in excluded and not v.honeypot),
        "annotator_ids": "ann- + HMAC-SHA256(pseudonym key, username)[:16]", "pseudonym_key_id": key_id,
        "scrubber": cfg.scrubber,
    }
    with run.lock():
        atomic_write_text(run.path(RESPONSES), "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                                                       for r in rows))
        write_pairs(run.dir, pairs)
        atomic_write_json(run.path(QUALITY), report.to_dict())
        atomic_write_json(run.path(SNAPSHOT), summary)
        run.finish([RESPONSES, "pairs.jsonl", QUALITY, SNAPSHOT], metrics={
            "label/responses": len(rows), "label/new_responses": changes["new"] + changes["changed"],
            "label/pairs": len(pairs), "label/pairwise_agreement": report.pairwise_agreement,
            "label/tie_rate": report.tie_rate, "label/slot_a_rate": report.slot_a_rate})
    flagged = {flag: report.flagged(flag) for flag in ("careless", "position_bias")}
    agreement = "n/a" if report.pairwise_agreement is None else f"{report.pairwise_agreement:.2f}"
    print(f"label pull: {len(rows)} responses ({changes['new']} new, {changes['changed']} changed), "
          f"{len(pairs)} pairs, pairwise agreement {agreement}, flagged {flagged} -> {run.dir}")
    return run.dir
