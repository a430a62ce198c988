"""Aggregating several annotators' rankings of one record into training pairs.

Three methods, chosen by config:

* ``majority``: per candidate pair, the side more annotators preferred; ``agreement`` is the share of votes
  for that side (ties count as half a vote each way); pairs at or below 0.5 agreement are dropped.
* ``borda``: candidates ordered by mean Borda score (K minus rank); pairs follow that order.
* ``bradley_terry``: strengths fitted to every (annotator, pair) verdict of the record by the MM algorithm
  (Hunter 2004) with a small symmetric prior (ties count as half a win each way); pairs follow the strengths.

For every method, a training pair carries ``agreement`` (the share of votes agreeing with its direction)
and ``margin`` (method-specific preference strength >= 0). Ties in the aggregate never become pairs
(InstructGPT, Ouyang et al. 2022; see docs/preference-loop.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from rlhf.preferences.votes import RankingVote, pair_outcomes

__all__ = ["AggregatedPair", "Method", "aggregate_record", "vote_shares"]

Method = Literal["majority", "borda", "bradley_terry"]


@dataclass(frozen=True)
class AggregatedPair:
    """A training pair of one record: ``chosen`` preferred to ``rejected``."""

    record_id: str
    prompt_id: str
    chosen: str
    rejected: str
    agreement: float
    margin: float
    votes: int


def vote_shares(votes: list[RankingVote]) -> dict[tuple[str, str], tuple[float, int]]:
    """For each unordered pair (a, b): (share of votes preferring a, number of votes); ties count half."""
    tally: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for vote in votes:
        for pair in pair_outcomes(vote.ranks):
            t = tally[(pair.a, pair.b)]
            t[0] += 1.0 if pair.outcome > 0 else 0.5 if pair.outcome == 0 else 0.0
            t[1] += 1
    return {key: (wins / n, int(n)) for key, (wins, n) in tally.items()}


def _ordered_pairs(order: dict[str, float], shares, record_id: str, prompt_id: str, scale: float) -> list[AggregatedPair]:
    out = []
    for (a, b), (share_a, n) in shares.items():
        if math.isclose(order[a], order[b], abs_tol=1e-9):
            continue
        chosen, rejected, agree = (a, b, share_a) if order[a] > order[b] else (b, a, 1.0 - share_a)
        out.append(AggregatedPair(record_id, prompt_id, chosen, rejected, agree, abs(order[a] - order[b]) * scale, n))
    return out


def _bradley_terry(votes: list[RankingVote], items: list[str], iters: int = 200, prior: float = 0.1) -> dict[str, float]:
    """Log-strengths by the MM algorithm; ``prior`` pseudo-wins against every other item keep them finite."""
    wins: dict[str, float] = defaultdict(float)
    games: dict[tuple[str, str], float] = defaultdict(float)
    for vote in votes:
        for pair in pair_outcomes(vote.ranks):
            games[(pair.a, pair.b)] += 1.0
            wins[pair.a] += 1.0 if pair.outcome > 0 else 0.5 if pair.outcome == 0 else 0.0
            wins[pair.b] += 1.0 if pair.outcome < 0 else 0.5 if pair.outcome == 0 else 0.0
    for a in items:
        for b in items:
            if a < b:
                games[(a, b)] += 2 * prior
        wins[a] += prior * (len(items) - 1)
    strength = {i: 1.0 for i in items}
    for _ in range(iters):
        new = {}
        for i in items:
            denom = sum(n / (strength[i] + strength[j]) for (a, b), n in games.items()
                        for j in ((b,) if a == i else (a,) if b == i else ()))
            new[i] = wins[i] / denom if denom > 0 else strength[i]
        mean = math.exp(sum(math.log(v) for v in new.values()) / len(new))
        strength = {i: v / mean for i, v in new.items()}
    return {i: math.log(v) for i, v in strength.items()}


def aggregate_record(votes: list[RankingVote], method: Method = "majority", min_agreement: float = 0.5) -> list[AggregatedPair]:
    """Training pairs of one record from all its (non-honeypot) votes; pairs at or below ``min_agreement`` dropped."""
    if not votes:
        return []
    record_id, prompt_id = votes[0].record_id, votes[0].prompt_id
    if any(v.record_id != record_id for v in votes):
        raise ValueError("aggregate_record takes the votes of one record")
    shares = vote_shares(votes)
    items = sorted(votes[0].ranks)
    if method == "majority":
        pairs = []
        for (a, b), (share_a, n) in shares.items():
            if math.isclose(share_a, 0.5):
                continue
            chosen, rejected, agree = (a, b, share_a) if share_a > 0.5 else (b, a, 1.0 - share_a)
            pairs.append(AggregatedPair(record_id, prompt_id, chosen, rejected, agree, 2 * agree - 1, n))
    elif method == "borda":
        k = len(items)
        score = {i: sum(k - v.ranks[i] for v in votes) / len(votes) for i in items}
        pairs = _ordered_pairs(score, shares, record_id, prompt_id, scale=1.0 / max(k - 1, 1))
    elif method == "bradley_terry":
        pairs = _ordered_pairs(_bradley_terry(votes, items), shares, record_id, prompt_id, scale=1.0)
    else:
        raise ValueError(f"unknown aggregation '{method}'; use majority, borda or bradley_terry")
    return [p for p in pairs if p.agreement > min_agreement]
