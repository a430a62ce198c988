"""Provenance for reports: each checkpoint's lineage and the data card of the annotation snapshots behind it.

The lineage of a checkpoint is the chain of stage manifests from its stage folder back to the start
(:func:`rlhf.core.artifacts.lineage`). Every folder met on the way (stage folders and the plain input paths
that manifests record) is checked for an annotation snapshot: a folder holding ``pairs.jsonl`` or a
quality report (one of :data:`QUALITY_REPORT_NAMES`). The data card reads from the quality report:

==================  ==========================================================================
field               keys looked up (first found, searched through nested objects)
==================  ==========================================================================
pairs               ``pairs``, ``n_pairs``, ``num_pairs`` (else the lines of ``pairs.jsonl``)
annotators          ``annotators``, ``n_annotators``, ``num_annotators`` (a list counts its items)
overlap             ``overlap``, ``min_submitted``, ``annotators_per_record``
agreement           ``pairwise_agreement``, ``agreement``
alpha               ``krippendorff_alpha``, ``alpha``
Kendall's W         ``kendalls_w``, ``kendall_w``
tie rate            ``tie_rate``
slot-A rate         ``slot_a_rate``, ``slot_a_win_rate``, ``position_a_rate``, ``first_slot_rate``
honeypot accuracy   ``honeypot_accuracy``
==================  ==========================================================================

These are the field names of :class:`rlhf.preferences.quality.QualityReport` (written as JSON), with a few
common alternatives. A field that is missing, or a snapshot with no report, is ``None`` ("not available"
in the report).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from rlhf.core.artifacts import find_stage_dir, lineage

__all__ = ["DATA_CARD_FIELDS", "QUALITY_REPORT_NAMES", "checkpoint_provenance", "read_data_card"]

QUALITY_REPORT_NAMES: tuple[str, ...] = ("quality_report.json", "quality.json")
DATA_CARD_FIELDS: dict[str, tuple[str, ...]] = {
    "pairs": ("pairs", "n_pairs", "num_pairs"),
    "annotators": ("annotators", "n_annotators", "num_annotators"),
    "overlap": ("overlap", "min_submitted", "annotators_per_record"),
    "agreement": ("pairwise_agreement", "agreement"),
    "alpha": ("krippendorff_alpha", "alpha"),
    "kendalls_w": ("kendalls_w", "kendall_w"),
    "tie_rate": ("tie_rate",),
    "slot_a_rate": ("slot_a_rate", "slot_a_win_rate", "position_a_rate", "first_slot_rate"),
    "honeypot_accuracy": ("honeypot_accuracy",),
}


def _number(value: Any, count_lists: bool) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if count_lists and isinstance(value, list):
        return float(len(value))
    if isinstance(value, dict):
        for key in ("overall", "value", "mean", "rate"):
            if isinstance(value.get(key), (int, float)) and not isinstance(value.get(key), bool):
                return float(value[key])
    return None


def _lookup(report: dict[str, Any], names: tuple[str, ...], count_lists: bool = False) -> float | None:
    """Breadth-first search of nested objects for the first key in ``names`` with a usable number."""
    queue: deque[dict[str, Any]] = deque([report])
    while queue:
        node = queue.popleft()
        for name in names:
            if name in node:
                found = _number(node[name], count_lists)
                if found is not None:
                    return found
        queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def _snapshot_folder(path: Path) -> Path | None:
    folder = path if path.is_dir() else path.parent
    if (folder / "pairs.jsonl").is_file() or any((folder / name).is_file() for name in QUALITY_REPORT_NAMES):
        return folder
    return None


def read_data_card(folder: str | Path) -> dict[str, Any]:
    """The data card of one snapshot folder (fields of :data:`DATA_CARD_FIELDS`, None when unknown)."""
    folder = Path(folder)
    report_path = next((folder / n for n in QUALITY_REPORT_NAMES if (folder / n).is_file()), None)
    report: dict[str, Any] = {}
    if report_path is not None:
        try:
            loaded = json.loads(report_path.read_text(encoding="utf-8"))
            report = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError:
            report = {}
    card: dict[str, Any] = {"folder": str(folder), "quality_report": str(report_path) if report_path else None}
    for field, names in DATA_CARD_FIELDS.items():
        card[field] = _lookup(report, names, count_lists=field == "annotators") if report else None
    if card["pairs"] is None and (folder / "pairs.jsonl").is_file():
        with (folder / "pairs.jsonl").open(encoding="utf-8") as handle:
            card["pairs"] = float(sum(1 for line in handle if line.strip()))
    return card


def checkpoint_provenance(model_path: str | Path) -> dict[str, Any]:
    """Lineage entries and snapshot data cards behind a checkpoint (empty when it is no stage output)."""
    path = Path(model_path)
    if not path.exists() or find_stage_dir(path) is None:
        return {"lineage": [], "snapshots": []}
    chain = lineage(path)
    entries, snapshots, seen = [], [], set()
    for entry in chain:
        git = entry.get("git") or {}
        entries.append({"depth": entry["depth"], "stage": entry["stage"], "dir": entry["dir"],
                        "fingerprint": entry["fingerprint"][:12], "finished_at": entry.get("finished_at"),
                        "git": (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else ""),
                        "inputs": {k: v.get("path") for k, v in sorted(entry.get("inputs", {}).items())}})
        candidates = [Path(entry["dir"])] + [Path(v["path"]) for v in entry.get("inputs", {}).values() if v.get("path")]
        for candidate in candidates:
            folder = _snapshot_folder(candidate) if candidate.exists() else None
            if folder is not None and str(folder) not in seen:
                seen.add(str(folder))
                snapshots.append({"used_by_stage": entry["stage"], **read_data_card(folder)})
    return {"lineage": entries, "snapshots": snapshots}
