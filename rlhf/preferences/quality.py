"""Quality statistics of a set of ranking votes, per annotator and overall.

* pairwise agreement: over every two annotators who ranked the same record, the share of candidate pairs
  they order the same way (tie = tie counts as agreement);
* Krippendorff's alpha over (record, candidate) units with ranks as values, interval metric, any number of
  annotators and missing data (Krippendorff 2011, "Computing Krippendorff's alpha-reliability");
* Kendall's W per record with K >= 3 and >= 2 annotators, tie-corrected, averaged over records;
* tie rate: share of pairwise verdicts that are ties;
* position bias: per annotator, how often the candidate in slot A beats the one in slot B (ties left out),
  with a two-sided exact binomial test against 0.5; p < ``bias_p`` flags the annotator;
* honeypots: per annotator, the share of a honeypot's pairs ordered as its known answer orders them;
* careless annotators: leave-one-out agreement with the other annotators' majority below
  ``careless_agreement``, or honeypot accuracy below ``honeypot_accuracy``.

Each flag comes with its reasons (:class:`FlagReason`: the measure, its value, the threshold it fell below),
so a stage can say why an annotator was flagged; the report also keeps the thresholds it used.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from itertools import combinations

from scipy.stats import binomtest

from rlhf.preferences.aggregate import vote_shares
from rlhf.preferences.votes import RankingVote, pair_outcomes

__all__ = ["AnnotatorQuality", "FlagReason", "QualityReport", "kendalls_w", "krippendorff_alpha_interval",
           "quality_report"]


@dataclass(frozen=True)
class FlagReason:
    """Why an annotator carries ``flag``: ``measure`` (a field of :class:`AnnotatorQuality`) was ``value``,
    below ``threshold`` (the value of the :func:`quality_report` argument named ``threshold_name``)."""

    flag: str  # 'careless' or 'position_bias'
    measure: str  # 'loo_agreement', 'honeypot_accuracy' or 'slot_a_p_value'
    value: float
    threshold_name: str  # 'careless_agreement', 'honeypot_accuracy' or 'bias_p'
    threshold: float


@dataclass
class AnnotatorQuality:
    """Per-annotator figures and flags."""

    annotator: str
    votes: int
    tie_rate: float
    slot_a_wins: int
    slot_a_trials: int
    slot_a_rate: float | None
    slot_a_p_value: float | None
    loo_agreement: float | None
    honeypot_accuracy: float | None
    flags: list[str] = field(default_factory=list)
    reasons: list[FlagReason] = field(default_factory=list)


@dataclass
class QualityReport:
    """Overall figures plus one :class:`AnnotatorQuality` per annotator."""

    votes: int
    records: int
    annotators: int
    overlap: float
    pairwise_agreement: float | None
    krippendorff_alpha: float | None
    kendalls_w: float | None
    tie_rate: float
    slot_a_rate: float | None
    honeypot_accuracy: float | None
    per_annotator: list[AnnotatorQuality]
    thresholds: dict[str, float] = field(default_factory=dict)  # the quality_report arguments that set flags

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return asdict(self)

    def flagged(self, flag: str) -> list[str]:
        """Annotators carrying ``flag`` ('position_bias' or 'careless')."""
        return [a.annotator for a in self.per_annotator if flag in a.flags]


def _sq_diff_sum(xs: list[float]) -> float:
    """Sum of (a - b)^2 over ordered pairs i != j, in O(n): 2n*sum(x^2) - 2*(sum x)^2."""
    return 2 * len(xs) * sum(x * x for x in xs) - 2 * sum(xs) ** 2


def krippendorff_alpha_interval(units: dict[object, dict[str, float]]) -> float | None:
    """Alpha with the interval metric; ``units`` maps a unit to {coder: value}. None when undefined."""
    pairable = [list(vals.values()) for vals in units.values() if len(vals) >= 2]
    n = sum(len(xs) for xs in pairable)
    if n < 2:
        return None
    observed = sum(_sq_diff_sum(xs) / (len(xs) - 1) for xs in pairable) / n
    expected = _sq_diff_sum([x for xs in pairable for x in xs]) / (n * (n - 1))
    if expected == 0:
        return None
    return 1.0 - observed / expected


def kendalls_w(rankings: list[dict[str, int]]) -> float | None:
    """Kendall's coefficient of concordance for m rankings of the same K >= 3 items, tie-corrected."""
    m = len(rankings)
    items = sorted(rankings[0]) if rankings else []
    k = len(items)
    if m < 2 or k < 3:
        return None
    # Average ranks for ties, so each ranking's ranks sum to k(k+1)/2.
    fractional = []
    tie_term = 0.0
    for ranks in rankings:
        groups: dict[int, list[str]] = defaultdict(list)
        for item, r in ranks.items():
            groups[r].append(item)
        position, frac = 1, {}
        for r in sorted(groups):
            members = groups[r]
            avg = position + (len(members) - 1) / 2
            for item in members:
                frac[item] = avg
            position += len(members)
            tie_term += len(members) ** 3 - len(members)
        fractional.append(frac)
    totals = [sum(f[i] for f in fractional) for i in items]
    mean = m * (k + 1) / 2
    s = sum((t - mean) ** 2 for t in totals)
    denom = m**2 * (k**3 - k) - m * tie_term
    return 12 * s / denom if denom > 0 else None


def _agree(x: int, y: int) -> bool:
    return x == y


def quality_report(
    votes: list[RankingVote],
    honeypot_answers: dict[str, dict[str, int]] | None = None,
    bias_p: float = 0.01,
    careless_agreement: float = 0.6,
    honeypot_accuracy: float = 0.7,
) -> QualityReport:
    """Every statistic of the module docstring. ``honeypot_answers`` maps a honeypot record id to its ranks."""
    honeypot_answers = honeypot_answers or {}
    by_record: dict[str, list[RankingVote]] = defaultdict(list)
    by_annotator: dict[str, list[RankingVote]] = defaultdict(list)
    for v in votes:
        by_record[v.record_id].append(v)
        by_annotator[v.annotator].append(v)
    regular = {r: vs for r, vs in by_record.items() if r not in honeypot_answers}

    agree_pairs = agree_total = 0
    for vs in regular.values():
        for v1, v2 in combinations(vs, 2):
            for p1, p2 in zip(pair_outcomes(v1.ranks), pair_outcomes(v2.ranks)):
                agree_total += 1
                agree_pairs += _agree(p1.outcome, p2.outcome)
    units = {(r, c): {v.annotator: float(v.ranks[c]) for v in vs} for r, vs in regular.items() for c in vs[0].ranks}
    ws = [w for vs in regular.values() if (w := kendalls_w([v.ranks for v in vs])) is not None]

    per = []
    all_ties = all_pairs = 0
    slot_w = slot_n = hp_right = hp_total = 0
    for name, vs in sorted(by_annotator.items()):
        ties = pairs = wins = trials = right = total = 0
        loo_agree = loo_total = 0
        for v in vs:
            outcomes = pair_outcomes(v.ranks)
            pairs += len(outcomes)
            ties += sum(p.outcome == 0 for p in outcomes)
            if len(v.slots) >= 2:
                a, b = v.ranks[v.slots[0]], v.ranks[v.slots[1]]
                if a != b:
                    trials += 1
                    wins += a < b
            if v.record_id in honeypot_answers:
                for mine, gold in zip(outcomes, pair_outcomes(honeypot_answers[v.record_id])):
                    if gold.outcome != 0:
                        total += 1
                        right += mine.outcome == gold.outcome
                continue
            others = [o for o in by_record[v.record_id] if o.annotator != name]
            if others:
                shares = vote_shares(others)
                for p in outcomes:
                    share_a, _ = shares[(p.a, p.b)]
                    if share_a != 0.5 and p.outcome != 0:
                        loo_total += 1
                        loo_agree += (p.outcome > 0) == (share_a > 0.5)
        all_ties += ties
        all_pairs += pairs
        slot_w += wins
        slot_n += trials
        hp_right += right
        hp_total += total
        p_value = binomtest(wins, trials, 0.5).pvalue if trials else None
        loo = loo_agree / loo_total if loo_total else None
        hp = right / total if total else None
        reasons = []
        if p_value is not None and p_value < bias_p:
            reasons.append(FlagReason("position_bias", "slot_a_p_value", p_value, "bias_p", bias_p))
        if loo is not None and loo < careless_agreement:
            reasons.append(FlagReason("careless", "loo_agreement", loo, "careless_agreement", careless_agreement))
        if hp is not None and hp < honeypot_accuracy:
            reasons.append(FlagReason("careless", "honeypot_accuracy", hp, "honeypot_accuracy", honeypot_accuracy))
        flags = list(dict.fromkeys(r.flag for r in reasons))
        per.append(AnnotatorQuality(name, len(vs), ties / pairs if pairs else 0.0, wins, trials,
                                    wins / trials if trials else None, p_value, loo, hp, flags, reasons))

    overlap = sum(len(vs) for vs in regular.values()) / len(regular) if regular else 0.0
    return QualityReport(
        votes=len(votes), records=len(by_record), annotators=len(by_annotator), overlap=overlap,
        pairwise_agreement=agree_pairs / agree_total if agree_total else None,
        krippendorff_alpha=krippendorff_alpha_interval(units),
        kendalls_w=sum(ws) / len(ws) if ws else None,
        tie_rate=all_ties / all_pairs if all_pairs else 0.0,
        slot_a_rate=slot_w / slot_n if slot_n else None,
        honeypot_accuracy=hp_right / hp_total if hp_total else None,
        per_annotator=per,
        thresholds={"bias_p": bias_p, "careless_agreement": careless_agreement, "honeypot_accuracy": honeypot_accuracy},
    )
