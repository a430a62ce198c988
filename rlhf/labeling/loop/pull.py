"""Building blocks of ``rlhf label pull`` (the stage's recipe is :mod:`rlhf.stages.label_pull`, which
describes the method): response rows, votes, training pairs, the responses digest, the earlier snapshots
of a push, and the words that say which annotators were excluded and why.
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
from rlhf.preferences.quality import FlagReason, QualityReport
from rlhf.preferences.votes import RankingVote

__all__ = ["build_pairs", "compatible_snapshot", "describe_reason", "exclusion_line", "exclusions", "find_previous",
           "no_pairs_message", "read_rows", "response_row", "responses_digest", "usernames", "votes_from_rows"]

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


MEASURE_NAMES = {"honeypot_accuracy": "honeypot accuracy", "loo_agreement": "leave-one-out agreement",
                 "slot_a_p_value": "slot-A p"}


def describe_reason(reason: FlagReason) -> str:
    """E.g. ``honeypot accuracy 0.20 < quality.honeypot_accuracy 0.8`` (threshold named by its pull config key)."""
    key = f"quality.{reason.threshold_name} {reason.threshold:g}"
    if reason.measure == "slot_a_p_value":
        return f"slot-A p={reason.value:.2g} < {key}"
    return f"{MEASURE_NAMES.get(reason.measure, reason.measure)} {reason.value:.2f} < {key}"


def exclusions(report: QualityReport, exclude_flagged: list[str]) -> dict[str, list[FlagReason]]:
    """Annotator -> the reasons behind its flags that ``exclude_flagged`` names (annotators left out of pairs)."""
    out = {}
    for annotator in report.per_annotator:
        reasons = [r for r in annotator.reasons if r.flag in exclude_flagged]
        if reasons:
            out[annotator.annotator] = reasons
    return out


def exclusion_line(annotator: str, reasons: list[FlagReason]) -> str:
    """One line naming an excluded annotator (a pseudonym), its flags, the measured values and thresholds."""
    return f"label pull: excluded {annotator} (" + "; ".join(f"{r.flag}: {describe_reason(r)}" for r in reasons) + ")"


def no_pairs_message(votes: int, dataset: str, excluded: dict[str, list[FlagReason]], annotators: int) -> str:
    """The one-line error of a pull that found no training pairs: how many annotators were excluded and why, and
    the fix."""
    head = f"no training pairs from {votes} submitted rankings of dataset '{dataset}'"
    if not excluded:
        return f"{head} (all ties, honeypots or below min_agreement); annotate more, then pull again"
    groups: dict[tuple[str, str, str, float], list[float]] = defaultdict(list)
    for reasons in excluded.values():
        for r in reasons:
            groups[(r.flag, r.measure, r.threshold_name, r.threshold)].append(r.value)
    why = []
    for (flag, measure, name, threshold), values in sorted(groups.items()):
        fmt, sep = (".2g", "=") if measure == "slot_a_p_value" else (".2f", " ")
        span = f"{min(values):{fmt}}" + (f"-{max(values):{fmt}}" if max(values) != min(values) else "")
        why.append(f"{len(values)} '{flag}' by {MEASURE_NAMES.get(measure, measure)}{sep}{span} < quality.{name} "
                   f"{threshold:g}")
    flags = sorted({r.flag for reasons in excluded.values() for r in reasons})
    fix = (f"lower the threshold(s) or drop {', '.join(repr(f) for f in flags)} from exclude_flagged")
    if "honeypot_accuracy" in {m for _, m, _, _ in groups}:
        fix += (", or check that the honeypots follow the annotators' rubric (label_push.honeypots.rubric, "
                "by default the demo world's gold rubric)")
    return (f"{head}: {len(excluded)} of {annotators} annotators excluded by exclude_flagged "
            f"({'; '.join(why)}); {fix}")


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
