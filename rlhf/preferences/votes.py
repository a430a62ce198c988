"""Typed containers for ranking votes, and a ranking's pairwise preferences.

A vote is one annotator's ranking of the K candidates of one record: ``ranks`` maps candidate id to rank
(1 is best; equal ranks are ties). ``slots`` lists the candidate ids in the order the annotator saw them
(slot A first), so position bias can be measured after the slot shuffle is undone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

__all__ = ["PairOutcome", "RankingVote", "pair_outcomes"]


@dataclass(frozen=True)
class RankingVote:
    """One annotator's ranking of one record's candidates."""

    record_id: str
    prompt_id: str
    annotator: str
    ranks: dict[str, int]
    slots: tuple[str, ...] = ()
    honeypot: bool = False
    submitted_at: str = ""
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ranks) < 2:
            raise ValueError(f"vote of {self.annotator} on {self.record_id} ranks fewer than 2 candidates")
        if any(r < 1 for r in self.ranks.values()):
            raise ValueError(f"vote of {self.annotator} on {self.record_id} has a rank below 1")
        if self.slots and set(self.slots) != set(self.ranks):
            raise ValueError(f"vote of {self.annotator} on {self.record_id}: slots and ranked candidates differ")


@dataclass(frozen=True)
class PairOutcome:
    """A vote's verdict on an unordered candidate pair (``a`` < ``b`` by id): +1 a preferred, -1 b, 0 tie."""

    a: str
    b: str
    outcome: int


def pair_outcomes(ranks: dict[str, int]) -> list[PairOutcome]:
    """All C(K, 2) pairwise verdicts a ranking implies, pairs keyed in sorted id order."""
    out = []
    for a, b in combinations(sorted(ranks), 2):
        diff = ranks[b] - ranks[a]
        out.append(PairOutcome(a, b, (diff > 0) - (diff < 0)))
    return out
