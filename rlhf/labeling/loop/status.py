"""``rlhf label status``: how far a round is, overall and per annotator.

Overall: records in the dataset, how many are completed (``min_submitted`` submitted responses, Argilla's
task distribution) and how many still wait (``GET /api/v1/datasets/{id}/progress``). Per annotator:
submitted, draft and discarded responses (``GET /api/v1/datasets/{id}/users/progress``), with the
pseudonym that snapshots use for them, so a flag in a quality report can be traced to a person by whoever
holds the pseudonym key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rlhf.labeling.http import ArgillaHTTP
from rlhf.labeling.loop.common import PushInfo, pseudonym

__all__ = ["AnnotatorProgress", "RoundStatus", "round_status"]


@dataclass(frozen=True)
class AnnotatorProgress:
    """One annotator's responses in the round."""

    username: str
    pseudonym: str
    submitted: int
    draft: int
    discarded: int


@dataclass(frozen=True)
class RoundStatus:
    """Progress of one round."""

    dataset: str
    min_submitted: int
    records: int
    completed: int
    pending: int
    annotators: list[AnnotatorProgress]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)

    def describe(self) -> str:
        """A short table for the terminal."""
        share = self.completed / self.records if self.records else 0.0
        lines = [(f"dataset '{self.dataset}': {self.completed} of {self.records} records completed ({share:.0%}), "
                  f"{self.pending} pending; {self.min_submitted} annotators per record")]
        if not self.annotators:
            return "\n".join([*lines, "no responses yet"])
        width = max(len(a.username) for a in self.annotators)
        lines.append(f"{'annotator':<{width}}  {'pseudonym':<20}  submitted  draft  discarded")
        for a in self.annotators:
            lines.append(f"{a.username:<{width}}  {a.pseudonym:<20}  {a.submitted:>9}  {a.draft:>5}  {a.discarded:>9}")
        return "\n".join(lines)


def _count(progress: dict[str, Any], status: str) -> int:
    return sum(int((progress.get(part) or {}).get(status, 0)) for part in ("completed", "pending"))


def round_status(http: ArgillaHTTP, push: PushInfo, key: bytes) -> RoundStatus:
    """The progress of the push's dataset (owner or admin key)."""
    overall = http.get(f"/api/v1/datasets/{push.dataset_id}/progress")
    users = http.get(f"/api/v1/datasets/{push.dataset_id}/users/progress")["users"]
    annotators = [AnnotatorProgress(u["username"], pseudonym(u["username"], key), _count(u, "submitted"),
                                    _count(u, "draft"), _count(u, "discarded")) for u in users]
    return RoundStatus(push.dataset, push.min_submitted, int(overall.get("total", 0)), int(overall.get("completed", 0)),
                       int(overall.get("pending", 0)), sorted(annotators, key=lambda a: a.username))
