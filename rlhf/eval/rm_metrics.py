"""Reward-model evaluation: pure functions of reward arrays (numpy; scipy for the temperature search), used by ``rlhf train rm``.

* accuracy: share of held-out pairs with ``r_chosen > r_rejected`` (an exact tie counts half), overall and
  by agreement bucket (pairs whose annotators agreed more should be easier);
* calibration: the Bradley-Terry probability ``sigmoid(r_chosen - r_rejected)`` against the annotators'
  vote share for ``chosen``; ECE = sum over equal-width probability bins of (bin share) x |mean predicted -
  mean vote share| (Naeini et al. 2015, with the vote share as a soft label). A snapshot stores each pair
  with the majority's pick as ``chosen``, so every vote share is at least 0.5; :func:`both_orders` adds each
  pair in the other order too (``1 - p`` against ``1 - share``), as a reliability diagram of a pairwise
  model must, else the ECE would reward overconfidence and punish every wrong pair by at least 0.5;
* temperature scaling (Guo et al. 2017): one scalar ``T`` with ``p = sigmoid((r_c - r_r) / T)`` fitted by
  minimising the soft-label log loss on held-out pairs (:func:`fit_temperature`); ranking and accuracy do
  not change. :func:`cross_fitted_probs` fits ``T`` on some prompts and applies it to the others, so the
  calibrated ECE is measured on pairs that did not choose ``T``;
* length bias: Pearson correlation of reward with response length (words), and the length-only baseline
  (predict the longer, or the shorter, reply as chosen: the direction is fitted on training pairs);
* best-of-n: for each prompt with ``N`` scored candidates and each ``n`` dividing ``N``, the candidates are
  cut into ``N / n`` disjoint groups; each group's pick is its highest proxy reward; the curve reports the
  mean gold score and proxy reward of the picks, and the gold oracle (best gold in the group). A proxy that
  tracks the gold rubric raises gold with ``n``; one that is being exploited raises only the proxy;
* reward statistics: mean and std of rewards on training responses, which PPO uses to normalise rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

__all__ = [
    "DEFAULT_AGREEMENT_EDGES",
    "accuracy_by_agreement",
    "best_of_n_curve",
    "both_orders",
    "calibration_bins",
    "cross_fitted_probs",
    "expected_calibration_error",
    "fit_temperature",
    "length_baseline",
    "pairwise_accuracy",
    "pearson",
    "reward_stats",
    "sigmoid",
]

DEFAULT_AGREEMENT_EDGES: tuple[float, ...] = (0.5, 0.7, 0.9, 1.0)


def _array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def sigmoid(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = _array(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ez = np.exp(x[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def pairwise_accuracy(r_chosen: Sequence[float], r_rejected: Sequence[float]) -> float:
    """Share of pairs ranked the annotators' way; an exact tie counts half."""
    diff = _array(r_chosen) - _array(r_rejected)
    if diff.size == 0:
        raise ValueError("no pairs to score; the held-out split is empty")
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def accuracy_by_agreement(r_chosen: Sequence[float], r_rejected: Sequence[float], agreement: Sequence[float],
                          edges: Sequence[float] = DEFAULT_AGREEMENT_EDGES) -> dict[str, dict[str, float]]:
    """Accuracy per agreement bucket ``(lo, hi]``, keyed ``"lo-hi"``; empty buckets are left out."""
    rc, rr, agree = _array(r_chosen), _array(r_rejected), _array(agreement)
    if not (rc.shape == rr.shape == agree.shape):
        raise ValueError("r_chosen, r_rejected and agreement must have the same length")
    if list(edges) != sorted(edges) or len(edges) < 2:
        raise ValueError(f"agreement bucket edges must be increasing with at least two values, got {list(edges)}")
    out: dict[str, dict[str, float]] = {}
    for lo, hi in pairwise(edges):
        mask = (agree > lo) & (agree <= hi)
        if mask.any():
            out[f"{lo:g}-{hi:g}"] = {"pairs": int(mask.sum()), "accuracy": pairwise_accuracy(rc[mask], rr[mask])}
    return out


def calibration_bins(probs: Sequence[float], targets: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1] of predicted probability: count, mean predicted, mean target."""
    p, t = _array(probs), _array(targets)
    if p.shape != t.shape or p.size == 0:
        raise ValueError("probs and targets must be non-empty and of the same length")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    index = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append({"lo": b / bins, "hi": (b + 1) / bins, "count": int(mask.sum()),
                         "predicted": float(p[mask].mean()), "observed": float(t[mask].mean())})
    return rows


def expected_calibration_error(probs: Sequence[float], targets: Sequence[float], bins: int = 10) -> float:
    """ECE: bin-share-weighted mean |mean predicted - mean target| over equal-width bins."""
    rows = calibration_bins(probs, targets, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] / total * abs(r["predicted"] - r["observed"]) for r in rows))


def both_orders(probs: Sequence[float], targets: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Each pair in both orders: ``(p, t)`` followed by ``(1 - p, 1 - t)``."""
    p, t = _array(probs), _array(targets)
    return np.concatenate([p, 1.0 - p]), np.concatenate([t, 1.0 - t])


def _log_loss(margins: np.ndarray, targets: np.ndarray, inverse_t: float) -> float:
    z = margins * inverse_t
    # -[t log sigmoid(z) + (1 - t) log sigmoid(-z)], with log sigmoid(z) = -logaddexp(0, -z)
    return float(np.mean(targets * np.logaddexp(0.0, -z) + (1.0 - targets) * np.logaddexp(0.0, z)))


def fit_temperature(margins: Sequence[float], targets: Sequence[float], lo: float = 0.02, hi: float = 50.0) -> float:
    """``T`` minimising the log loss of ``sigmoid(margin / T)`` against soft targets, within ``[lo, hi]``.

    The loss is convex in ``1 / T`` (a one-weight logistic regression), so a bounded scalar search over
    ``1 / T`` (scipy's ``minimize_scalar``) finds the optimum.
    """
    from scipy.optimize import minimize_scalar

    m, t = _array(margins), _array(targets)
    if m.shape != t.shape or m.size == 0:
        raise ValueError("margins and targets must be non-empty and of the same length")
    if not 0 < lo < hi:
        raise ValueError(f"temperature bounds must satisfy 0 < lo < hi, got {lo}, {hi}")
    best = minimize_scalar(lambda inverse_t: _log_loss(m, t, inverse_t), bounds=(1.0 / hi, 1.0 / lo),
                           method="bounded", options={"xatol": 1e-6})
    return float(1.0 / best.x)


def cross_fitted_probs(margins: Sequence[float], targets: Sequence[float], groups: Sequence[str],
                       folds: int = 2) -> np.ndarray:
    """Calibrated probabilities where each pair's ``T`` was fitted on the other folds' groups (prompts).

    Groups are assigned to folds in sorted order, round robin, so the split is deterministic; with fewer
    groups than folds there is nothing to hold out and a ``ValueError`` says so.
    """
    m, t = _array(margins), _array(targets)
    keys = sorted(set(groups))
    if len(keys) < folds or folds < 2:
        raise ValueError(f"cross-fitting needs at least {max(folds, 2)} prompts and 2 folds, got {len(keys)} "
                         f"prompts and {folds} folds")
    fold_of = {k: i % folds for i, k in enumerate(keys)}
    fold = np.array([fold_of[g] for g in groups])
    out = np.empty_like(m)
    for f in range(folds):
        held = fold == f
        out[held] = sigmoid(m[held] / fit_temperature(m[~held], t[~held]))
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or there are fewer than two points."""
    a, b = _array(x), _array(y)
    if a.shape != b.shape:
        raise ValueError("pearson needs two sequences of the same length")
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def length_baseline(train_chosen_len: Sequence[float], train_rejected_len: Sequence[float],
                    eval_chosen_len: Sequence[float], eval_rejected_len: Sequence[float]) -> tuple[str, float]:
    """("longer" or "shorter", held-out accuracy) of predicting by length in the direction fitted on train."""
    fit = pairwise_accuracy(train_chosen_len, train_rejected_len)
    direction = "longer" if fit >= 0.5 else "shorter"
    sign = 1.0 if direction == "longer" else -1.0
    return direction, pairwise_accuracy(sign * _array(eval_chosen_len), sign * _array(eval_rejected_len))


def best_of_n_curve(proxy: np.ndarray, gold: np.ndarray, ns: Sequence[int]) -> list[dict[str, float]]:
    """Best-of-n by proxy reward over disjoint groups of each prompt's candidates (arrays: [prompts, N])."""
    proxy, gold = _array(proxy), _array(gold)
    if proxy.ndim != 2 or proxy.shape != gold.shape:
        raise ValueError("proxy and gold must both be [prompts, candidates] arrays of the same shape")
    width = proxy.shape[1]
    rows = []
    for n in ns:
        if n < 1 or width % n:
            raise ValueError(f"best-of-n: n={n} must divide the candidates per prompt ({width})")
        p = proxy.reshape(proxy.shape[0], width // n, n)
        g = gold.reshape(gold.shape[0], width // n, n)
        pick = p.argmax(axis=-1)[..., None]
        rows.append({
            "n": int(n),
            "gold": float(np.take_along_axis(g, pick, axis=-1).mean()),
            "proxy": float(np.take_along_axis(p, pick, axis=-1).mean()),
            "gold_oracle": float(g.max(axis=-1).mean()),
        })
    return rows


def reward_stats(rewards: Sequence[float]) -> dict[str, float]:
    """Mean, std (population) and count of rewards: the normalisation statistics PPO reads."""
    r = _array(rewards)
    if r.size == 0:
        raise ValueError("no rewards to summarise")
    return {"mean": float(r.mean()), "std": float(r.std()), "count": int(r.size)}
