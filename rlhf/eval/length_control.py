"""Length-controlled win rate, in the style of AlpacaEval 2 (Dubois et al. 2024, arXiv:2404.04475).

Longer replies tend to win with reward models, judges and people alike, so a raw win rate mixes quality
with verbosity. The length-controlled (LC) win rate asks: what would the win rate be if the two replies
had the same length?

Method
------
For each paired prompt ``i`` with outcome ``y_i`` in {0, 0.5, 1} (ties as half) and length difference
``d_i = len(a_i) - len(b_i)`` (tokens or characters), fit the logistic model

    P(A wins | d) = sigmoid(theta + phi * tanh(d / sigma)),    sigma = std(d),

by penalised maximum likelihood with fractional targets (Newton's method on the Bernoulli deviance plus
``ridge / 2 * (theta^2 + phi^2)``; the small ridge keeps a sweep of wins finite). The LC win rate is
``sigmoid(theta)``: the prediction with the length term set to zero. AlpacaEval 2 fits the same form
across many models with an extra instruction-difficulty term; with one pair of policies on one prompt set
that term is constant and folds into ``theta``. The bounded ``tanh`` keeps a few very long replies from
dominating the fit, as in AlpacaEval 2. When every length difference is equal (``sigma == 0``) the length
term is dropped and the LC win rate is the (ridge-shrunk) raw one.

The interval is a paired bootstrap over prompts (``sigma`` held at its full-sample value): all resamples
are fitted at once as weighted problems, with multinomial counts as weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rlhf.eval.stats import Interval

__all__ = ["LengthControlledResult", "fit_length_glm", "length_controlled_win_rate"]

_MAX_STEP = 4.0


@dataclass(frozen=True)
class LengthControlledResult:
    """The LC win rate, its bootstrap interval and the fitted coefficients."""

    lc_win_rate: float
    raw_win_rate: float
    theta: float
    phi: float
    sigma: float
    interval: Interval

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_length_glm(
    outcomes: np.ndarray,
    feature: np.ndarray,
    weights: np.ndarray | None = None,
    ridge: float = 1e-3,
    max_iter: int = 200,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``sigmoid(theta + phi * feature)`` to fractional ``outcomes`` by penalised Newton steps.

    ``weights`` has shape [B, n] (one weighted problem per row, e.g. bootstrap counts) or is None (one
    unweighted problem). Returns ``theta`` and ``phi``, each of shape [B] (B = 1 without weights).
    """
    y = np.asarray(outcomes, dtype=float)  # [n]
    x = np.asarray(feature, dtype=float)  # [n]
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))  # [B, n]
    theta = np.zeros(w.shape[0])
    phi = np.zeros(w.shape[0])
    for _ in range(max_iter):
        p = _sigmoid(theta[:, None] + phi[:, None] * x[None, :])  # [B, n]
        r = w * (p - y[None, :])
        g0 = r.sum(1) + ridge * theta
        g1 = (r * x[None, :]).sum(1) + ridge * phi
        s = w * p * (1.0 - p)
        h00 = s.sum(1) + ridge
        h01 = (s * x[None, :]).sum(1)
        h11 = (s * x[None, :] ** 2).sum(1) + ridge
        det = h00 * h11 - h01 * h01
        step0 = (h11 * g0 - h01 * g1) / det
        step1 = (h00 * g1 - h01 * g0) / det
        # Damped Newton: a step longer than `_MAX_STEP` (possible on near-separable data) is shortened.
        scale = np.minimum(1.0, _MAX_STEP / np.maximum(np.hypot(step0, step1), 1e-300))
        step0, step1 = step0 * scale, step1 * scale
        theta = theta - step0
        phi = phi - step1
        if max(np.abs(step0).max(), np.abs(step1).max()) < tol:
            break
    return theta, phi


def length_controlled_win_rate(
    outcomes: Sequence[float] | np.ndarray,
    length_diff: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    ridge: float = 1e-3,
) -> LengthControlledResult:
    """LC win rate of A over B from paired outcomes and length differences ``len(A) - len(B)``."""
    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    if y.ndim != 1 or y.shape != d.shape:
        raise ValueError(f"outcomes and length_diff must be 1-D and equally long, got {y.shape} and {d.shape}")
    if y.size == 0:
        raise ValueError("no outcomes; the comparison has no paired samples")
    if np.any((y < 0) | (y > 1)) or not np.all(np.isfinite(d)):
        raise ValueError("outcomes must lie in [0, 1] and length differences must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sigma = float(d.std())
    feature = np.tanh(d / sigma) if sigma > 0 else np.zeros_like(d)
    theta, phi = fit_length_glm(y, feature, ridge=ridge)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(y.size, np.full(y.size, 1.0 / y.size), size=n_boot)  # [n_boot, n]
    boot_theta, _ = fit_length_glm(y, feature, weights=counts, ridge=ridge)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(_sigmoid(boot_theta), [alpha, 1.0 - alpha])
    return LengthControlledResult(
        lc_win_rate=float(_sigmoid(theta)[0]), raw_win_rate=float(y.mean()), theta=float(theta[0]),
        phi=float(phi[0]), sigma=sigma, interval=Interval(float(low), float(high), confidence),
    )
