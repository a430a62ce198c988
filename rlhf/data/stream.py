"""The training prompts of an RL run as an endless, seeded, resumable stream, and the seeds derived for it.

* :func:`derive_seed`: a 31-bit seed from any parts (run seed, a purpose, step, worker...), the same in
  every process, so every random choice of a run can be repeated after a resume.
* :class:`PromptStream`: the prompts in a seeded shuffled order per epoch; its :class:`DataPosition`
  (epoch, offset) is checkpointed, and a stream built at that position continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from rlhf.core.errors import UserError

__all__ = ["DataPosition", "PromptStream", "derive_seed"]


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any parts (run seed, step, worker...), stable across processes."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class DataPosition:
    """Where the prompt stream stands: epoch of the shuffled order and offset inside it."""

    epoch: int = 0
    offset: int = 0


class PromptStream:
    """Prompts in a seeded shuffled order per epoch; ``position`` says where the stream stands."""

    def __init__(self, prompts: list[str], seed: int, position: DataPosition | None = None) -> None:
        if not prompts:
            raise UserError("the training prompt set is empty; check data.path")
        self.prompts = prompts
        self.seed = seed
        self.position = position or DataPosition()
        self._order = self._shuffled(self.position.epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(derive_seed(self.seed, "epoch", epoch)).shuffle(order)
        return order

    def take(self, count: int) -> list[str]:
        """The next ``count`` prompts (a new epoch starts, reshuffled, when one runs out)."""
        out = []
        while len(out) < count:
            if self.position.offset >= len(self._order):
                self.position = DataPosition(self.position.epoch + 1, 0)
                self._order = self._shuffled(self.position.epoch)
            out.append(self.prompts[self._order[self.position.offset]])
            self.position = DataPosition(self.position.epoch, self.position.offset + 1)
        return out
