"""Small, dependency-free statistics helpers.

Everything here is pure Python (``math`` only): no numpy, scipy or torch, so it
can be imported anywhere (training loop, report generation, tests).

Public API
----------
- :func:`wilson_interval` -- Wilson score interval for a binomial proportion.
- :func:`signal_probability` -- P(a GRPO group of G samples has >= 1 parseable answer).
- :func:`t_quantile` -- two-sided Student-t critical value (exact, via the
  regularized incomplete beta function).
- :func:`mean_ci` -- mean with a Student-t confidence interval (e.g. over seeds).
- :func:`steps_to_threshold` -- first logged step at which a metric reaches a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "wilson_interval",
    "signal_probability",
    "t_quantile",
    "mean_ci",
    "steps_to_threshold",
]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` trials (95 % by default).

    ``n == 0`` gives the uninformative interval ``(0.0, 1.0)``.
    Raises ``ValueError`` for negative counts, ``successes > n`` or ``z <= 0``.
    """
    if isinstance(successes, bool) or isinstance(n, bool):
        raise ValueError("successes and n must be integers, not bools")
    if int(successes) != successes or int(n) != n:
        raise ValueError(f"successes and n must be integers, got {successes!r}, {n!r}")
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0:
        raise ValueError(f"counts must be non-negative, got successes={successes}, n={n}")
    if successes > n:
        raise ValueError(f"successes ({successes}) cannot exceed n ({n})")
    if not z > 0:
        raise ValueError(f"z must be positive, got {z}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clamp tiny floating-point excursions; the exact bounds are 0 / 1 at the edges.
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return (lo, hi)


def signal_probability(p: float, group_size: int) -> float:
    """Probability ``1 - (1 - p) ** G`` that a group of ``G`` sampled completions
    contains at least one parseable number, given a per-sample rate ``p``.

    A group with no parseable answer gets identical (zero) rewards, hence zero
    advantage and no learning signal under GRPO.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if isinstance(group_size, bool) or int(group_size) != group_size or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    return 1.0 - (1.0 - p) ** int(group_size)


# --------------------------------------------------------------------------- t quantile


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    bt = math.exp(log_bt)
    if x < (a + 1.0) / (a + b + 2.0):
        return bt * _betacf(a, b, x) / a
    return 1.0 - bt * _betacf(b, a, 1.0 - x) / b


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value: ``P(|T_df| <= t) = confidence``.

    Computed exactly by bisection on the regularized incomplete beta function
    (``P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2)``), e.g. ``t_quantile(2) == 4.303``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    target = 1.0 - confidence  # two-sided tail mass, increasing in x
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _betainc(df / 2.0, 0.5, mid) < target:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return math.sqrt(df * (1.0 - x) / x)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t confidence interval of ``values`` (e.g. one value per seed).

    Returns ``{"mean": m, "ci": [lo, hi], "values": [...]}``. A single value gives
    ``ci == [m, m]`` (no spread can be estimated); no values give
    ``{"mean": None, "ci": None, "values": []}``.
    """
    vals = [float(v) for v in values]
    if any(not math.isfinite(v) for v in vals):
        raise ValueError(f"values must be finite, got {vals}")
    n = len(vals)
    if n == 0:
        return {"mean": None, "ci": None, "values": []}
    m = sum(vals) / n
    if n == 1:
        return {"mean": m, "ci": [m, m], "values": vals}
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    half = t_quantile(n - 1, confidence) * sd / math.sqrt(n)
    return {"mean": m, "ci": [m - half, m + half], "values": vals}


def steps_to_threshold(steps: Sequence[int], values: Sequence[float | None], threshold: float) -> int | None:
    """First step whose value is ``>= threshold`` (``None`` values are skipped).

    ``steps`` and ``values`` are parallel sequences in logging order.
    Returns ``None`` if the threshold is never reached.
    """
    if len(steps) != len(values):
        raise ValueError(f"steps ({len(steps)}) and values ({len(values)}) differ in length")
    for step, value in zip(steps, values):
        if value is not None and value >= threshold:
            return step
    return None
