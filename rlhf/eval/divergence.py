"""KL to the reference and best-of-n, from per-sample numbers (numpy only).

Sequence-level Monte Carlo KL
-----------------------------
``KL(pi || ref) = E_{x ~ prompts, y ~ pi(.|x)} [log pi(y|x) - log ref(y|x)]``. With samples ``y_i`` drawn
from the policy itself (temperature 1, no nucleus truncation: otherwise the samples are not from ``pi``
and the estimate is biased), the mean of ``log pi(y_i|x_i) - log ref(y_i|x_i)`` is an unbiased estimate;
its standard error is the sample standard deviation over ``sqrt(n)``. Single terms can be negative; the mean
is not, in expectation. ``log pi(y|x)`` is the sum of the reply's token log-probabilities (EOS included)
under teacher forcing (the rollout engine's ``logprobs``, temperature 1).

Best-of-n
---------
For each prompt, ``N`` samples with a proxy score (a reward model) and optionally a gold score. Best-of-n
picks the sample with the highest proxy among ``n`` drawn at random. Its expectation over all
``C(N, n)`` subsets is exact: with the samples sorted by proxy (ascending, ranks ``i = 1..N``), the
maximum of a random ``n``-subset is rank ``i`` with probability ``C(i-1, n-1) / C(N, n)``. The KL of the
best-of-n policy to the sampling policy is at most ``log n - (n-1)/n`` (Stiennon et al. 2020, Hilton
2022), which places best-of-n on the reward-vs-KL plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["BestOfNCurve", "KLEstimate", "best_of_n_curve", "best_of_n_kl_bound", "sequence_kl"]


@dataclass(frozen=True)
class KLEstimate:
    """Monte Carlo KL in nats per sequence, its standard error, and KL per reply token."""

    kl: float
    stderr: float
    kl_per_token: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def sequence_kl(
    policy_logprobs: Sequence[float] | np.ndarray,
    reference_logprobs: Sequence[float] | np.ndarray,
    lengths: Sequence[int] | np.ndarray | None = None,
) -> KLEstimate:
    """Sequence-level KL estimate from log-probabilities of the policy's own samples under both models."""
    lp = np.asarray(policy_logprobs, dtype=float)
    lr = np.asarray(reference_logprobs, dtype=float)
    if lp.ndim != 1 or lp.shape != lr.shape:
        raise ValueError(f"log-probability arrays must be 1-D and equally long, got {lp.shape} and {lr.shape}")
    if lp.size == 0:
        raise ValueError("no samples to estimate KL from")
    if not (np.all(np.isfinite(lp)) and np.all(np.isfinite(lr))):
        raise ValueError("log-probabilities must be finite; a -inf means the reference cannot produce a sample")
    ratio = lp - lr
    stderr = float(ratio.std(ddof=1) / math.sqrt(ratio.size)) if ratio.size > 1 else math.nan
    if lengths is None:
        per_token = math.nan
    else:
        tokens = np.asarray(lengths, dtype=float)
        if tokens.shape != lp.shape:
            raise ValueError(f"lengths must match the samples ({lp.size}), got shape {tokens.shape}")
        per_token = float(ratio.sum() / max(tokens.sum(), 1.0))
    return KLEstimate(kl=float(ratio.mean()), stderr=stderr, kl_per_token=per_token, n=int(ratio.size))


def best_of_n_kl_bound(n: int) -> float:
    """Upper bound on KL(best-of-n || base) in nats: ``log n - (n - 1) / n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


@dataclass(frozen=True)
class BestOfNCurve:
    """Expected proxy (and gold) score of the best-of-n pick, for each n, with the KL bound."""

    n: list[int]
    proxy: list[float]
    gold: list[float] | None
    kl_bound: list[float]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def _selection_weights(total: int, n: int) -> np.ndarray:
    """P(rank i is the max of a random n-subset of ``total``), ranks ascending (shape [total])."""
    ranks = np.arange(1, total + 1)
    log_w = np.array([_log_comb(i - 1, n - 1) for i in ranks]) - _log_comb(total, n)
    return np.where(ranks >= n, np.exp(log_w), 0.0)


def _log_comb(a: int, b: int) -> float:
    if b < 0 or b > a:
        return -math.inf
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def best_of_n_curve(
    proxy: np.ndarray,
    gold: np.ndarray | None = None,
    ns: Sequence[int] | None = None,
) -> BestOfNCurve:
    """Exact expected best-of-n scores from ``proxy`` (and ``gold``) of shape [prompts, N samples].

    ``ns`` defaults to the powers of two up to N (and N itself). Proxy ties are broken by sample order.
    """
    proxy = np.asarray(proxy, dtype=float)
    if proxy.ndim != 2 or proxy.shape[1] < 1 or proxy.shape[0] < 1:
        raise ValueError(f"proxy must have shape [prompts, samples], got {proxy.shape}")
    total = proxy.shape[1]
    gold_arr = None if gold is None else np.asarray(gold, dtype=float)
    if gold_arr is not None and gold_arr.shape != proxy.shape:
        raise ValueError(f"gold must match proxy's shape {proxy.shape}, got {gold_arr.shape}")
    if ns is None:
        ns = sorted({2 ** k for k in range(int(math.log2(total)) + 1)} | {total})
    bad = [n for n in ns if not 1 <= n <= total]
    if bad:
        raise ValueError(f"best-of-n sizes {bad} fall outside 1..{total} (the samples drawn per prompt)")
    order = np.argsort(proxy, axis=1, kind="stable")  # ascending proxy, [prompts, N]
    proxy_sorted = np.take_along_axis(proxy, order, axis=1)
    gold_sorted = None if gold_arr is None else np.take_along_axis(gold_arr, order, axis=1)
    proxy_curve, gold_curve = [], []
    for n in ns:
        w = _selection_weights(total, n)  # [N]
        proxy_curve.append(float((proxy_sorted @ w).mean()))
        if gold_sorted is not None:
            gold_curve.append(float((gold_sorted @ w).mean()))
    return BestOfNCurve(n=list(ns), proxy=proxy_curve, gold=gold_curve if gold_sorted is not None else None,
                        kl_bound=[best_of_n_kl_bound(n) for n in ns])
