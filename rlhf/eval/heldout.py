"""The held-out evaluation that SFT, DPO and PPO share: one prompt set, one seed, one scorer, one comparison.

Every training stage that reports a held-out score takes an ``eval`` section of :class:`HeldoutConfig`:

* :func:`heldout_prompts` picks the prompts: the ``eval`` split of a prompt file or prepare stage folder
  (``eval.path``), or ``eval.prompts`` demo-world prompts drawn with ``run.seed + HELDOUT_SEED_OFFSET``.
  With the same ``run.seed`` and section, every stage evaluates exactly the same prompts, so their win
  rates compare (training prompts are drawn apart and never overlap them: see :func:`training_prompts_without`);
* :func:`score_replies` scores replies with the rubric (``module:function`` called as ``f(prompt, reply)``);
* :func:`gold_summary` describes one policy's scores, :func:`heldout_comparison` compares a policy with its
  starting point on the same prompts (win rate with ties counted half, paired-bootstrap interval from
  :func:`rlhf.eval.stats.compare_scores`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from rlhf.core.config import StrictModel
from rlhf.core.errors import UserError
from rlhf.rollout.sampling import SamplingConfig

__all__ = ["HELDOUT_SEED_OFFSET", "HeldoutConfig", "gold_summary", "heldout_comparison", "heldout_inputs", "heldout_prompts",
           "prompt_file", "score_replies", "training_prompts_without", "write_samples"]

# Held-out demo prompts are drawn with run.seed + this offset in every stage.
HELDOUT_SEED_OFFSET = 10_000


def _default_sampling() -> SamplingConfig:
    return SamplingConfig(temperature=1.0, max_new_tokens=96)


class HeldoutConfig(StrictModel):
    """Held-out evaluation: which prompts, how replies are sampled, how they are scored."""

    prompts: int = Field(128, ge=0, description="held-out prompts (0: no evaluation)")
    path: str | None = Field(None, description="held-out prompt file or prepare stage folder (its eval split); "
                             "omit for demo-world prompts")
    rubric: str = Field("rlhf.world.demo:gold_rubric", description="module:function scoring (prompt, reply)")
    sampling: SamplingConfig = Field(default_factory=_default_sampling, description="how replies are sampled")
    bootstrap: int = Field(1000, ge=1, description="paired bootstrap resamples of the win-rate interval")


def prompt_file(path: str | Path, split: str) -> Path:
    """``path`` itself, or ``<path>/prompts/<split>.jsonl`` when ``path`` is a prepare stage folder."""
    folder = Path(path)
    candidate = folder / "prompts" / f"{split}.jsonl"
    return candidate if folder.is_dir() and candidate.is_file() else folder


def heldout_inputs(cfg: HeldoutConfig) -> dict[str, Path]:
    """The held-out prompt file as a stage input (its hash enters the run folder's fingerprint), if any."""
    if cfg.prompts == 0 or not cfg.path:
        return {}
    path = prompt_file(cfg.path, "eval")
    if not path.exists():
        raise UserError(f"eval.path {cfg.path} does not exist; point it at a prompt file or a prepare stage "
                        "folder, or omit it for demo-world prompts")
    return {"eval_prompts": path}


def heldout_prompts(cfg: HeldoutConfig, seed: int) -> list[str]:
    """The held-out prompts of a stage seeded with ``seed`` (the same for every stage given the same section)."""
    if cfg.prompts == 0:
        return []
    if cfg.path:
        from rlhf.data.prompts import load_prompt_records

        (path,) = heldout_inputs(cfg).values()
        return [record.prompt for record in load_prompt_records(path)][:cfg.prompts]
    from rlhf.world.demo import generate_prompts

    return [prompt.text for prompt in generate_prompts(cfg.prompts, seed=seed + HELDOUT_SEED_OFFSET)]


def training_prompts_without(prompts: Sequence[str], heldout: Sequence[str]) -> list[str]:
    """``prompts`` minus any that are also held out (a held-out prompt is never trained on)."""
    held = set(heldout)
    return [prompt for prompt in prompts if prompt not in held]


def score_replies(prompts: Sequence[str], replies: Sequence[str], rubric: str) -> list[float]:
    """The rubric's score of each (prompt, reply)."""
    from rlhf.utils.callables import load_callable

    scorer = load_callable(rubric)
    return [float(scorer(prompt, reply)) for prompt, reply in zip(prompts, replies, strict=True)]


def gold_summary(scores: Sequence[float]) -> dict[str, float]:
    """Mean, spread and number of distinct levels of one policy's held-out scores."""
    return {"gold_mean": statistics.fmean(scores), "gold_std": statistics.pstdev(scores),
            "gold_min": min(scores), "gold_max": max(scores), "gold_levels": len({round(s, 2) for s in scores})}


def heldout_comparison(scores: Sequence[float], baseline: Sequence[float], n_boot: int = 1000,
                       seed: int = 0) -> dict[str, float]:
    """Win rate of a policy over its starting point on the same held-out prompts, with its interval."""
    from rlhf.eval.stats import compare_scores

    result = compare_scores(list(scores), list(baseline), n_boot=n_boot, seed=seed)
    return {"win_rate": result.win_rate, "win_rate_low": result.bootstrap.low,
            "win_rate_high": result.bootstrap.high, "gold_mean": statistics.fmean(scores),
            "gold_mean_baseline": statistics.fmean(baseline),
            "tie_rate": sum(a == b for a, b in zip(scores, baseline)) / len(scores)}


def write_samples(path: Path, prompts: Sequence[str], replies: Sequence[str], scores: Sequence[float],
                  baseline_replies: Sequence[str] | None = None, baseline_scores: Sequence[float] | None = None) -> None:
    """``samples.jsonl``: one line per held-out prompt, with the baseline's reply and score when given."""
    from rlhf.core.artifacts import atomic_write_text

    lines = []
    for i, (prompt, reply, score) in enumerate(zip(prompts, replies, scores, strict=True)):
        row = {"prompt": prompt, "reply": reply, "gold": score}
        if baseline_replies is not None and baseline_scores is not None:
            row.update(baseline_reply=baseline_replies[i], baseline_gold=baseline_scores[i])
        lines.append(json.dumps(row) + "\n")
    atomic_write_text(path, "".join(lines))
