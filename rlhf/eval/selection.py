"""Where the scorers disagree, how far replies drifted, and the rule that picks a round's best policy.

Pure functions over the eval folder's data (``results.json`` as a dict, ``samples.parquet`` as a frame,
``human_eval.json`` files as dicts); no model, no torch. The report shows all three; ``rlhf pipeline``
starts the next round from :func:`best_policy`'s choice.

Method
------
* **Scorer disagreement** (:func:`scorer_disagreements`). For each policy, every pair of scorers among the
  reward models (``rm/<name>``) and the trusted scorers (the gold rubric ``gold``; people, ``human``, when a
  ``human_eval.json`` compares the policy with the baseline) is tested on its win rates against the same
  baseline. Two rules, by what the data holds:

  - *paired* (reward models and gold): both scorers scored the very same (policy reply, baseline reply)
    pairs, which ``samples.parquet`` keeps. Per pair, the outcome under each scorer is 1, 0.5 or 0 (ties
    within the eval's ``tie_tolerance``); the win-rate difference is the mean of the per-pair differences,
    and its paired bootstrap interval (prompts resampled, at the eval's confidence, ``n_boot`` and seed;
    whole prompts when a prompt has several samples) is computed. The pair is flagged when that interval
    excludes 0. Pairing removes the prompt-to-prompt noise that both scorers share, so this rule sees a
    disagreement that two overlapping intervals would hide.
  - *disjoint intervals* (any pair with ``human``, or when no samples are given): ``human_eval.json``
    holds no per-item outcomes that line up with the samples' pairs, so only the two reported intervals
    can be compared; the pair is flagged when they do not overlap. This is conservative: for independent
    estimates two disjoint 95 % intervals mean p < 0.006 or so.
* **Reply drift** (:func:`reply_drift`): each policy's mean reply length (``tokens``, else words) and
  mean fluency against the baseline's. Fluency is the column ``rubric/fluency`` when the samples carry the
  rubric's breakdown (the demo rubric's fluency multiplier); otherwise the world-independent *distinct-3*:
  per reply, the share of distinct word trigrams among its word trigrams (1 for a reply of one or two
  words, 0 for an empty one), averaged over replies; repetition loops pull it down. A policy is flagged
  when its mean length changes by more than :data:`LENGTH_DRIFT` (relative, either way) or its fluency
  falls by more than :data:`FLUENCY_DROP` (absolute).
* **Best policy** (:func:`best_policy`): see its docstring; :func:`best_policy` also returns the rule as
  one sentence, which the report prints.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rlhf.eval.analysis import paired_frame, score_column
from rlhf.eval.stats import bootstrap_interval, pairwise_outcomes

__all__ = ["FLUENCY_COLUMN", "FLUENCY_DROP", "GOLD", "HUMAN", "LENGTH_DRIFT", "Disagreement", "ReplyDrift", "WinRate",
           "best_policy", "comparison", "distinct_trigram_share", "reply_drift", "scorer_disagreements",
           "scorer_label", "trusted_scorer"]

HUMAN = "human"
GOLD = "gold"
RM_PREFIX = "rm/"
FLUENCY_COLUMN = "rubric/fluency"
LENGTH_DRIFT = 0.20  # relative change of the mean reply length
FLUENCY_DROP = 0.05  # absolute fall of the mean fluency (both measures lie in [0, 1])
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class WinRate:
    """One scorer's win rate of a policy against the baseline, with its interval."""

    scorer: str
    rate: float
    low: float
    high: float

    def text(self) -> str:
        """``"86 % [80, 91]"``."""
        return f"{100 * self.rate:.0f} % [{100 * self.low:.0f}, {100 * self.high:.0f}]"


def scorer_label(scorer: str) -> str:
    """How the report names a scorer: ``RM rm-r1``, ``gold``, ``human raters``."""
    if scorer.startswith(RM_PREFIX):
        return f"RM {scorer.removeprefix(RM_PREFIX)}"
    return "human raters" if scorer == HUMAN else scorer


@dataclass(frozen=True)
class Disagreement:
    """Two scorers whose win rates of ``policy`` against ``baseline`` differ beyond their intervals.

    ``first`` is the less trusted of the two (a reward model before gold before human). ``diff_low`` and
    ``diff_high`` bound ``first.rate - second.rate`` (paired rule); NaN under the disjoint-interval rule.
    """

    policy: str
    baseline: str
    first: WinRate
    second: WinRate
    rule: str  # "paired" or "disjoint intervals"
    diff_low: float = math.nan
    diff_high: float = math.nan

    def verdict(self) -> str:
        """Who is off, in words."""
        direction = "overrates" if self.first.rate > self.second.rate else "underrates"
        if self.first.scorer.startswith(RM_PREFIX) and not self.second.scorer.startswith(RM_PREFIX):
            return f"the reward model {direction} this policy"
        if self.first.scorer.startswith(RM_PREFIX):
            return "the reward models disagree"
        return f"{scorer_label(self.first.scorer)} and {scorer_label(self.second.scorer)} disagree"

    def message(self) -> str:
        """One line for the report."""
        verb = "say" if self.second.scorer == HUMAN else "says"
        text = (f"{scorer_label(self.first.scorer)} says {self.policy} wins {self.first.text()}; "
                f"{scorer_label(self.second.scorer)} {verb} {self.second.text()}: {self.verdict()}")
        if self.rule == "paired":
            return text + (f" (paired difference {100 * (self.first.rate - self.second.rate):+.0f} points, "
                           f"interval [{100 * self.diff_low:+.0f}, {100 * self.diff_high:+.0f}])")
        return text + " (the intervals do not overlap)"


def comparison(results: dict[str, Any], policy: str, scorer: str,
               human: Sequence[dict[str, Any]] = ()) -> WinRate | None:
    """``policy``'s win rate against the eval's baseline under ``scorer`` (``human``: the first
    ``human_eval.json`` of the pair, either way round); None when there is none."""
    baseline = results["baseline"]
    if scorer == HUMAN:
        for h in human:
            if (h["policy_a"], h["policy_b"]) == (policy, baseline):
                return WinRate(HUMAN, h["win_rate"], h["ci_low"], h["ci_high"])
            if (h["policy_a"], h["policy_b"]) == (baseline, policy):
                return WinRate(HUMAN, 1 - h["win_rate"], 1 - h["ci_high"], 1 - h["ci_low"])
        return None
    for c in results["comparisons"]:
        if (c["policy"], c["baseline"], c["scorer"]) == (policy, baseline, scorer):
            return WinRate(scorer, c["win_rate"], c["ci_low"], c["ci_high"])
    return None


def _paired_difference(results: dict[str, Any], samples: pd.DataFrame, policy: str, first: str,
                       second: str) -> tuple[float, float]:
    """Paired bootstrap interval of (win rate under ``first``) - (win rate under ``second``)."""
    settings = results["settings"]
    joined = paired_frame(samples, policy, results["baseline"])
    tol = settings.get("tie_tolerance", 0.0)
    diff = np.asarray(
        pairwise_outcomes(joined[score_column(first)], joined[score_column(first) + "_b"], tol)
        - pairwise_outcomes(joined[score_column(second)], joined[score_column(second) + "_b"], tol))
    groups = joined["prompt_index"].to_numpy() if joined["sample"].nunique() > 1 else None
    interval = bootstrap_interval(lambda idx: float(diff[idx].mean()), len(diff), settings.get("n_boot", 2000),
                                  settings.get("confidence", 0.95), settings.get("seed", 0), groups)
    return interval.low, interval.high


def scorer_disagreements(results: dict[str, Any], samples: pd.DataFrame | None = None,
                         human: Sequence[dict[str, Any]] = ()) -> list[Disagreement]:
    """Every pair of scorers (reward models, gold, human) that disagrees on a policy (see the module
    docstring for the two rules). Without ``samples`` every pair uses the disjoint-interval rule."""
    flags = []
    rms = [s for s in results["scorers"] if s.startswith(RM_PREFIX)]
    trusted = [GOLD] if GOLD in results["scorers"] else []
    for policy in results["policies"]:
        if policy == results["baseline"]:
            continue
        rates = [r for s in [*rms, *trusted, HUMAN] if (r := comparison(results, policy, s, human)) is not None]
        for a, b in itertools.combinations(rates, 2):
            columns = samples is not None and {score_column(a.scorer), score_column(b.scorer)} <= set(samples)
            if columns:
                low, high = _paired_difference(results, samples, policy, a.scorer, b.scorer)
                if low > 0 or high < 0:
                    flags.append(Disagreement(policy, results["baseline"], a, b, "paired", low, high))
            elif a.low > b.high or b.low > a.high:
                flags.append(Disagreement(policy, results["baseline"], a, b, "disjoint intervals"))
    return flags


@dataclass(frozen=True)
class ReplyDrift:
    """A policy's mean reply length and fluency against the baseline's."""

    policy: str
    baseline: str
    length_unit: str  # "tokens" or "words"
    length: float
    baseline_length: float
    fluency_measure: str  # FLUENCY_COLUMN or "distinct-3"
    fluency: float
    baseline_fluency: float

    @property
    def length_change(self) -> float:
        """Relative change of the mean length (0.25: a quarter longer)."""
        return self.length / self.baseline_length - 1 if self.baseline_length > 0 else math.nan

    @property
    def fluency_change(self) -> float:
        """Absolute change of the mean fluency."""
        return self.fluency - self.baseline_fluency

    @property
    def flags(self) -> tuple[str, ...]:
        """What drifted beyond the thresholds, in words (empty: nothing)."""
        out = []
        if abs(self.length_change) > LENGTH_DRIFT:
            out.append(f"replies {'longer' if self.length_change > 0 else 'shorter'} by "
                       f"{abs(self.length_change):.0%} (threshold {LENGTH_DRIFT:.0%})")
        if self.fluency_change < -FLUENCY_DROP:
            out.append(f"fluency down {-self.fluency_change:.2f} (threshold {FLUENCY_DROP:.2f})")
        return tuple(out)


def distinct_trigram_share(text: str) -> float:
    """Share of distinct word trigrams among the reply's word trigrams (1 under three words, 0 if empty)."""
    words = _WORD.findall(str(text).lower())
    if not words:
        return 0.0
    trigrams = list(zip(words, words[1:], words[2:]))
    return len(set(trigrams)) / len(trigrams) if trigrams else 1.0


def reply_drift(samples: pd.DataFrame, baseline: str) -> list[ReplyDrift]:
    """Mean length and fluency of each policy against ``baseline`` (policies in their order in ``samples``)."""
    unit = "tokens" if "tokens" in samples else "words"
    length = samples["tokens"] if unit == "tokens" else samples["reply"].map(lambda r: len(str(r).split()))
    measure = FLUENCY_COLUMN if FLUENCY_COLUMN in samples else "distinct-3"
    fluency = samples[measure] if measure == FLUENCY_COLUMN else samples["reply"].map(distinct_trigram_share)
    means = pd.DataFrame({"policy": samples["policy"], "length": length.astype(float),
                          "fluency": fluency.astype(float)}).groupby("policy", sort=False).mean()
    if baseline not in means.index:
        raise ValueError(f"no samples of the baseline '{baseline}'")
    base = means.loc[baseline]
    return [ReplyDrift(str(policy), baseline, unit, float(row["length"]), float(base["length"]), measure,
                       float(row["fluency"]), float(base["fluency"]))
            for policy, row in means.iterrows() if policy != baseline]


def trusted_scorer(results: dict[str, Any], candidates: Iterable[str],
                   human: Sequence[dict[str, Any]] = ()) -> str:
    """``human`` when every candidate has a human result against the baseline, else ``gold`` when the eval
    scored with the gold rubric, else the eval's primary scorer."""
    names = list(candidates)
    if human and names and all(comparison(results, n, HUMAN, human) is not None for n in names):
        return HUMAN
    return GOLD if GOLD in results["scorers"] else results["primary"]


def best_policy(results: dict[str, Any], candidates: Iterable[str],
                human: Sequence[dict[str, Any]] = ()) -> tuple[str | None, str]:
    """The policy round ``r + 1`` starts from, and the rule as one sentence.

    Scorer: :func:`trusted_scorer` (human, else gold, else the primary). Only candidates whose interval
    lies wholly above 50 % count (``ci_low > 0.5``: the policy beats the baseline); among them the highest
    win rate wins, ties going to the higher lower end, then to the earlier candidate. None when no
    candidate beats the baseline. ``candidates`` are policy names of the eval (a dict of name -> folder
    works too); one the eval did not compare under the scorer is an error.
    """
    names = list(candidates)
    scorer = trusted_scorer(results, names, human)
    level = results.get("settings", {}).get("confidence", 0.95)
    rule = (f"The best policy is the candidate with the highest {scorer_label(scorer)} win rate against "
            f"{results['baseline']} among those whose {100 * level:.0f} % interval lies above 50 % (ties: the higher "
            f"lower end); if none does, the next round keeps its starting policy.")
    best: tuple[float, float] | None = None
    chosen = None
    for name in names:
        rate = comparison(results, name, scorer, human)
        if rate is None:
            raise ValueError(f"candidate '{name}' has no '{scorer}' comparison with '{results['baseline']}' "
                             "in this eval; evaluate every candidate")
        key = (rate.rate, rate.low)
        if rate.low > 0.5 and (best is None or key > best):
            best, chosen = key, name
    return chosen, rule
