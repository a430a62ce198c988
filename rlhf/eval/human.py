"""Blind pairwise (A/B) evaluation by people: pairing, slot shuffling, and votes merged into a win rate.

Method
------
* **Pairing**: the replies of policy A and policy B to the same prompt (and sample index) form one item.
  An item whose two replies are identical is not shown to anyone: it is an automatic tie (0.5), since no
  annotator could tell the replies apart.
* **Blinding and slot shuffling**: annotators see "Response 1" and "Response 2", never the policy. Which
  slot holds A is drawn by a seeded permutation that puts A first in exactly half of the items (one more
  when the count is odd), so a slot preference of the annotators cancels out of the win rate instead of
  adding noise. The slot map stays outside the annotation tool.
* **Votes**: each vote is ``"1"``, ``"2"`` or ``"tie"``; mapped back through the slot map it becomes an
  outcome for A (1, 0.5 or 0). An item's outcome is the mean of its votes, the win rate is the mean over
  items, and the interval is a bootstrap over items (:func:`rlhf.eval.stats.summarise_outcomes`) next to
  the Wilson and Clopper-Pearson intervals.
* **Quality**: the slot-1 rate among decisive votes with a two-sided binomial p-value (position bias),
  the tie rate, pairwise agreement between annotators on items with several votes, and per-annotator
  counts and win rates.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from rlhf.eval.stats import sign_test_p_value, summarise_outcomes

__all__ = ["BlindItem", "HumanEvalResult", "HumanVote", "build_blind_items", "merge_votes", "vote_outcome"]

Choice = Literal["1", "2", "tie"]
CHOICES: tuple[str, ...] = ("1", "2", "tie")


@dataclass(frozen=True)
class BlindItem:
    """One A/B comparison; ``a_slot`` (1 or 2) says where A's reply is shown. ``auto_tie``: identical replies."""

    item_id: str
    prompt_index: int
    sample: int
    prompt: str
    category: str
    reply_a: str
    reply_b: str
    a_slot: int
    auto_tie: bool = False

    @property
    def slots(self) -> tuple[str, str]:
        """The texts shown as (Response 1, Response 2)."""
        return (self.reply_a, self.reply_b) if self.a_slot == 1 else (self.reply_b, self.reply_a)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class HumanVote:
    """One annotator's answer to one item."""

    item_id: str
    annotator: str
    choice: Choice


def _item_id(prompt: str, reply_a: str, reply_b: str, policy_a: str, policy_b: str) -> str:
    payload = f"{policy_a}\x1f{policy_b}\x1f{prompt}\x1f{reply_a}\x1f{reply_b}"
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def build_blind_items(
    prompts: Sequence[str],
    replies_a: Sequence[str],
    replies_b: Sequence[str],
    policy_a: str,
    policy_b: str,
    seed: int,
    prompt_indices: Sequence[int] | None = None,
    samples: Sequence[int] | None = None,
    categories: Sequence[str] | None = None,
) -> list[BlindItem]:
    """Blind items for paired replies, with A in slot 1 for exactly half of the shown items (seeded)."""
    n = len(prompts)
    if not n == len(replies_a) == len(replies_b):
        raise ValueError("prompts, replies_a and replies_b must be equally long")
    if n == 0:
        raise ValueError("no paired replies to compare")
    prompt_indices = list(prompt_indices) if prompt_indices is not None else list(range(n))
    samples = list(samples) if samples is not None else [0] * n
    categories = list(categories) if categories is not None else ["all"] * n
    shown = [i for i in range(n) if replies_a[i] != replies_b[i]]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(shown))
    a_first = {shown[j] for j in order[: (len(shown) + 1) // 2]}
    items = []
    for i in range(n):
        items.append(BlindItem(
            item_id=_item_id(prompts[i], replies_a[i], replies_b[i], policy_a, policy_b),
            prompt_index=int(prompt_indices[i]), sample=int(samples[i]), prompt=prompts[i],
            category=str(categories[i]), reply_a=replies_a[i], reply_b=replies_b[i],
            a_slot=1 if (i in a_first or i not in shown) else 2, auto_tie=i not in shown,
        ))
    ids = [item.item_id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("two items share prompt and replies; de-duplicate the prompt set first")
    return items


def vote_outcome(item: BlindItem, choice: str) -> float:
    """Outcome for A of one vote: 1 when the chosen slot holds A, 0 when it holds B, 0.5 for a tie."""
    if choice not in CHOICES:
        raise ValueError(f"vote '{choice}' is not one of {CHOICES}")
    if choice == "tie":
        return 0.5
    return 1.0 if int(choice) == item.a_slot else 0.0


@dataclass(frozen=True)
class HumanEvalResult:
    """Human A/B result: win rate of A with intervals, and the quality numbers of the votes."""

    policy_a: str
    policy_b: str
    items: int
    items_voted: int
    auto_ties: int
    votes: int
    annotators: int
    win_rate: float
    ci_low: float
    ci_high: float
    wilson_low: float
    wilson_high: float
    cp_low: float
    cp_high: float
    p_value: float
    tie_rate: float
    slot1_rate: float
    slot1_p_value: float
    agreement: float
    per_annotator: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (an undefined number, such as agreement with one annotator, becomes None)."""
        return _nan_to_none(asdict(self))


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _pairwise_agreement(by_item: dict[str, list[tuple[str, float]]]) -> float:
    agree = total = 0
    for votes in by_item.values():
        for (_, x), (_, y) in itertools.combinations(votes, 2):
            total += 1
            agree += int(x == y)
    return agree / total if total else float("nan")


def merge_votes(
    items: Sequence[BlindItem],
    votes: Sequence[HumanVote],
    policy_a: str,
    policy_b: str,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> HumanEvalResult:
    """Merge votes into A's win rate over B (ties half; automatic ties included; unvoted items left out)."""
    by_id = {item.item_id: item for item in items}
    unknown = sorted({v.item_id for v in votes} - set(by_id))
    if unknown:
        raise ValueError(f"{len(unknown)} votes name items that are not in the slot map (first: {unknown[0]}); "
                         "pull with the items file that the push wrote")
    by_item: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for vote in votes:
        if by_id[vote.item_id].auto_tie:
            continue
        by_item[vote.item_id].append((vote.annotator, vote_outcome(by_id[vote.item_id], vote.choice)))
    auto = [item for item in items if item.auto_tie]
    outcomes = [float(np.mean([o for _, o in v])) for v in by_item.values()] + [0.5] * len(auto)
    if not outcomes:
        raise ValueError("no votes yet and no automatic ties: nothing to merge; wait for annotators to submit")
    summary = summarise_outcomes(outcomes, n_boot=n_boot, confidence=confidence, seed=seed)
    counted = [v for v in votes if not by_id[v.item_id].auto_tie]
    decisive = [v for v in counted if v.choice != "tie"]
    slot1 = sum(v.choice == "1" for v in decisive)
    annotators: dict[str, list[HumanVote]] = defaultdict(list)
    for vote in counted:
        annotators[vote.annotator].append(vote)
    per_annotator = {
        name: {"votes": float(len(vs)),
               "win_rate_a": float(np.mean([vote_outcome(by_id[v.item_id], v.choice) for v in vs])),
               "tie_rate": float(np.mean([v.choice == "tie" for v in vs])),
               "slot1_rate": float(np.mean([v.choice == "1" for v in vs if v.choice != "tie"]))
               if any(v.choice != "tie" for v in vs) else float("nan")}
        for name, vs in sorted(annotators.items())
    }
    return HumanEvalResult(
        policy_a=policy_a, policy_b=policy_b, items=len(items), items_voted=len(by_item), auto_ties=len(auto),
        votes=len(counted), annotators=len(annotators), win_rate=summary.win_rate,
        ci_low=summary.bootstrap.low, ci_high=summary.bootstrap.high,
        wilson_low=summary.wilson.low, wilson_high=summary.wilson.high,
        cp_low=summary.clopper_pearson.low, cp_high=summary.clopper_pearson.high, p_value=summary.p_value,
        tie_rate=float(np.mean([v.choice == "tie" for v in counted])) if counted else float("nan"),
        slot1_rate=slot1 / len(decisive) if decisive else float("nan"),
        slot1_p_value=sign_test_p_value(slot1, len(decisive) - slot1),
        agreement=_pairwise_agreement(by_item), per_annotator=per_annotator,
    )
