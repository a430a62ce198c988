"""The slot map of a ranking round: which candidate sits in which response slot of which record.

Argilla shows the response fields of a dataset in the same order to every annotator and cannot shuffle
them, so the push draws the order itself, once per record: the K candidate ids are sorted and shuffled by a
``random.Random`` seeded with ``"<seed>:<record key>"`` (reproducible, independent of the other records).
Slot A is the first response field (``response_1``).

The slot map (``slots.jsonl`` in the push's run folder, one :class:`SlotRecord` per line) is the only link
from a slot to a candidate, its policy and, for honeypots, the known answer. It never goes to Argilla:
annotators can read every record of their workspace through the API with their own key.

A record's key (its Argilla ``external_id``) is a hash of its content only, the prompt and the sorted
candidate texts, so pushing the same content again finds the record instead of adding a duplicate, whatever
the seed. When the server already holds a record, :func:`adopt_server_order` reads the slot order from
the texts stored there, so the slot map always describes what annotators were shown.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import atomic_write_text
from rlhf.core.errors import UserError

__all__ = [
    "SLOT_MAP",
    "SlotRecord",
    "adopt_server_order",
    "read_slot_map",
    "record_key",
    "shuffle_slots",
    "write_slot_map",
]

SLOT_MAP = "slots.jsonl"


@dataclass(frozen=True)
class SlotRecord:
    """One record of a round: its prompt, the candidates in slot order and (honeypots) the known answer."""

    external_id: str
    prompt_id: str
    prompt: str
    slots: tuple[str, ...]  # candidate ids in slot order, slot A first
    texts: dict[str, str]  # candidate id -> text shown (after PII scrubbing)
    honeypot: bool = False
    answer: dict[str, int] | None = None  # honeypots: candidate id -> known rank (1 best, equal = tie)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # candidate id -> metadata (policy, ...)

    def fields(self, prompt_field: str, slot_fields: Sequence[str]) -> dict[str, str]:
        """The Argilla fields of this record: the prompt and each slot's text."""
        if len(slot_fields) != len(self.slots):
            raise ValueError(f"record {self.external_id} has {len(self.slots)} candidates for {len(slot_fields)} slots")
        return {prompt_field: self.prompt, **{name: self.texts[cid] for name, cid in zip(slot_fields, self.slots)}}

    def ranks(self, groups: list[list[str]], slot_fields: Sequence[str]) -> dict[str, int]:
        """Candidate id -> rank from a ranking of slot names (best group first; a group holds ties).

        Raises ValueError when the ranking names an unknown slot or leaves one out.
        """
        by_slot = dict(zip(slot_fields, self.slots))
        ranks: dict[str, int] = {}
        for rank, group in enumerate(groups, start=1):
            for slot in group:
                if slot not in by_slot or by_slot[slot] in ranks:
                    raise ValueError(f"ranking of record {self.external_id} names slot '{slot}' twice or unknown")
                ranks[by_slot[slot]] = rank
        if len(ranks) != len(self.slots):
            raise ValueError(f"ranking of record {self.external_id} leaves out {len(self.slots) - len(ranks)} slots")
        return ranks

    def to_json(self) -> dict[str, Any]:
        """Plain data for one ``slots.jsonl`` line."""
        row = asdict(self)
        row["slots"] = list(self.slots)
        return row

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> SlotRecord:
        return cls(
            external_id=row["external_id"], prompt_id=row["prompt_id"], prompt=row["prompt"],
            slots=tuple(row["slots"]), texts=dict(row["texts"]), honeypot=bool(row.get("honeypot", False)),
            answer={k: int(v) for k, v in row["answer"].items()} if row.get("answer") else None,
            candidates=dict(row.get("candidates") or {}),
        )


def record_key(prompt: str, texts: Iterable[str]) -> str:
    """The content key of a record: SHA-256 of the prompt and the sorted candidate texts (32 hex digits)."""
    payload = json.dumps([prompt, sorted(texts)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def shuffle_slots(candidate_ids: Iterable[str], seed: int, key: str) -> tuple[str, ...]:
    """The candidates in a random slot order, reproducible from ``seed`` and the record ``key``."""
    order = sorted(candidate_ids)
    random.Random(f"{seed}:{key}").shuffle(order)
    return tuple(order)


def adopt_server_order(record: SlotRecord, fields: dict[str, Any], slot_fields: Sequence[str]) -> SlotRecord:
    """``record`` with the slot order the server holds (its fields matched to candidate texts).

    Raises ``UserError`` when the stored texts are not this record's candidates.
    """
    by_text: dict[str, list[str]] = {}
    for cid in sorted(record.slots):
        by_text.setdefault(record.texts[cid], []).append(cid)
    order = []
    for name in slot_fields:
        matches = by_text.get(str(fields.get(name)), [])
        if not matches:
            raise UserError(f"record {record.external_id} on the server holds other texts than the candidates of "
                            f"prompt {record.prompt_id}; push into a new dataset (set dataset=<new name>)")
        order.append(matches.pop(0))
    return SlotRecord(record.external_id, record.prompt_id, record.prompt, tuple(order), record.texts,
                      record.honeypot, record.answer, record.candidates)


def write_slot_map(path: str | Path, records: Iterable[SlotRecord]) -> Path:
    """Write the slot map atomically (one JSON object per line); returns the file."""
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False) + "\n"
                                    for r in records))
    return path


def read_slot_map(path: str | Path) -> dict[str, SlotRecord]:
    """external id -> :class:`SlotRecord` from a push folder (or its ``slots.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        path = path / SLOT_MAP
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass the folder of a completed 'rlhf label push'")
    records = [SlotRecord.from_json(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return {r.external_id: r for r in records}
