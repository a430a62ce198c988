"""Building blocks of ``rlhf label pull`` (the stage's recipe is :mod:`rlhf.stages.label_pull`, which
describes the method): response rows, votes, training pairs, the responses digest and the earlier snapshots
of a push.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import MANIFEST, read_manifest
from rlhf.data.pairs import PreferencePair
from rlhf.data.pii import ScrubResult, run_scrubber
from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import PushInfo
from rlhf.labeling.loop.slots import SlotRecord
from rlhf.labeling.responses import ranking_of
from rlhf.labeling.users import list_users
from rlhf.preferences.aggregate import aggregate_record
from rlhf.preferences.votes import RankingVote

__all__ = ["build_pairs", "compatible_snapshot", "find_previous", "read_rows", "response_row", "responses_digest",
           "usernames", "votes_from_rows"]

RESPONSES = "responses.jsonl"
QUALITY = "quality_report.json"
SNAPSHOT = "snapshot.json"


def responses_digest(records: list[dict[str, Any]]) -> str:
    """A digest of the server's non-draft responses (id, status, updated_at): it changes when any does."""
    keys = sorted(f"{r['id']}|{r['status']}|{r['updated_at']}" for rec in records for r in rec.get("responses") or []
                  if r.get("status") != "draft")
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def response_row(response: dict[str, Any], slot: SlotRecord, push: PushInfo, annotator: str,
                 scrub: Callable[[str], ScrubResult | str]) -> dict[str, Any]:
    """One ``responses.jsonl`` row: the raw answer with slots mapped back to candidates."""
    values = response.get("values") or {}
    ranking = ranking_of(values, push.ranking_question)
    ranks, invalid = None, None
    if response["status"] == "submitted":
        try:
            ranks = slot.ranks(ranking, push.slot_fields)
        except ValueError as err:
            invalid = str(err)
    rationale = (values.get("rationale") or values.get("comment") or {}).get("value")  # ranking-v2, ranking-v1
    return {
        "response_id": str(response["id"]), "record": slot.external_id, "prompt_id": slot.prompt_id,
        "annotator": annotator, "status": response["status"], "honeypot": slot.honeypot,
        "slots": list(slot.slots), "ranking": ranking, "ranks": ranks, "invalid": invalid,
        "flags": list((values.get("flags") or {}).get("value") or []),
        "rating": (values.get("best_rating") or {}).get("value"),
        "rationale": run_scrubber(scrub, str(rationale)).text if rationale else None,
        "inserted_at": response.get("inserted_at"), "updated_at": response.get("updated_at"),
    }


def votes_from_rows(rows: list[dict[str, Any]]) -> list[RankingVote]:
    """The ranking votes of the submitted, valid rows."""
    return [RankingVote(record_id=row["record"], prompt_id=row["prompt_id"], annotator=row["annotator"],
                        ranks=row["ranks"], slots=tuple(row["slots"]), honeypot=row["honeypot"],
                        submitted_at=str(row["updated_at"]))
            for row in rows if row["status"] == "submitted" and row["ranks"]]


def build_pairs(votes: list[RankingVote], slot_map: dict[str, SlotRecord], method: str, min_agreement: float,
                min_votes: int, excluded: set[str], provenance: dict[str, Any]) -> list[PreferencePair]:
    """Training pairs from the non-honeypot votes of annotators not in ``excluded``, per record."""
    by_record: dict[str, list[RankingVote]] = defaultdict(list)
    for vote in votes:
        if not vote.honeypot and vote.annotator not in excluded:
            by_record[vote.record_id].append(vote)
    pairs = []
    for record_id in sorted(by_record):
        slot, used = slot_map[record_id], by_record[record_id]
        for agg in aggregate_record(used, method, min_agreement):  # type: ignore[arg-type]
            if agg.votes < min_votes:
                continue
            pairs.append(PreferencePair(
                prompt=slot.prompt, chosen=slot.texts[agg.chosen], rejected=slot.texts[agg.rejected],
                agreement=agg.agreement, margin=agg.margin, prompt_id=slot.prompt_id, chosen_id=agg.chosen,
                rejected_id=agg.rejected,
                provenance={**provenance, "record": record_id, "method": method, "votes": agg.votes,
                            "annotators": sorted(v.annotator for v in used),
                            "chosen_policy": slot.candidates.get(agg.chosen, {}).get("policy"),
                            "rejected_policy": slot.candidates.get(agg.rejected, {}).get("policy")},
            ))
    return pairs


def find_previous(root: Path, push_dir: Path) -> Path | None:
    """The newest complete snapshot of ``push_dir`` under ``root`` (None for the first pull)."""
    found = []
    for manifest in (root / "label_pull").glob(f"*/{MANIFEST}"):
        data = read_manifest(manifest.parent)
        if data.get("inputs", {}).get("push", {}).get("path") == str(push_dir):
            found.append((data.get("finished_at", ""), manifest.parent))
    return max(found)[1] if found else None


def read_rows(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows = [json.loads(line) for line in (folder / RESPONSES).read_text(encoding="utf-8").splitlines() if line]
    return {(row["response_id"], str(row["updated_at"])): row for row in rows}


def compatible_snapshot(previous: Path, key_id: str, scrubber: str) -> bool:
    """Rows of ``previous`` can be taken over when they were pseudonymised and scrubbed the same way."""
    summary = json.loads((previous / SNAPSHOT).read_text(encoding="utf-8"))
    return summary.get("pseudonym_key_id") == key_id and summary.get("scrubber") == scrubber


def usernames(http: ArgillaHTTP) -> dict[str, str]:
    return {user.id: user.username for user in list_users(http)}
