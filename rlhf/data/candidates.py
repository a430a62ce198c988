"""Candidate replies: the rows of a generate stage's ``candidates.jsonl`` and their content keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["candidate_id", "read_candidates"]


def candidate_id(prompt_id: str, text: str) -> str:
    """Content key of a candidate reply."""
    return hashlib.sha256(f"{prompt_id}\x00{text}".encode()).hexdigest()[:16]


def read_candidates(path: str | Path) -> list[dict]:
    """Rows of a generate stage's ``candidates.jsonl`` (a stage folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "candidates.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
