"""The one sampling schema of every config that samples replies (generation, rollouts, held-out
evaluation): :class:`SamplingConfig`, turned into the engines' :class:`~rlhf.rollout.types.SamplingParams`
by :meth:`SamplingConfig.params`. Importing it imports no torch, so ``--help`` stays fast.
"""

from __future__ import annotations

from pydantic import Field

from rlhf.core.config import StrictModel

__all__ = ["SamplingConfig"]


class SamplingConfig(StrictModel):
    """How replies are sampled."""

    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (1: off)")
    top_k: int = Field(0, ge=0, description="top-k sampling (0: off)")
    max_new_tokens: int = Field(64, ge=1, description="longest reply in tokens")
    stop: list[str] = Field(default_factory=list, description="stop strings")

    def params(self, n: int = 1):
        """The engines' :class:`~rlhf.rollout.types.SamplingParams` with ``n`` replies per prompt."""
        from rlhf.rollout.types import SamplingParams

        return SamplingParams(n=n, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_new_tokens=self.max_new_tokens, stop=tuple(self.stop))
