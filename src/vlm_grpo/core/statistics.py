"""Statistics helpers for assessments and studies, on scipy.stats.

- :func:`wilson_interval` -- Wilson score interval for a binomial proportion.
- :func:`signal_probability` -- P(a GRPO group of G samples has >= 1 parseable answer).
- :func:`t_quantile` -- two-sided Student-t critical value.
- :func:`mean_ci` -- mean with a Student-t confidence interval (e.g. over seeds); one value has none.
- :func:`paired_difference` -- mean paired difference (e.g. injection minus none, seed by seed) with
  its t-interval, the paired t-test's and Wilcoxon's signed-rank p-values.
- :func:`steps_to_threshold` -- first logged step at which a metric reaches a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats

__all__ = [
    "wilson_interval",
    "signal_probability",
    "t_quantile",
    "mean_ci",
    "paired_difference",
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
    confidence = 2 * stats.norm.cdf(z) - 1
    interval = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    # Exact bounds at the edges (scipy's can be off by float rounding there).
    lo = 0.0 if successes == 0 else max(0.0, float(interval.low))
    hi = 1.0 if successes == n else min(1.0, float(interval.high))
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


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """Two-sided Student-t critical value: ``P(|T_df| <= t) = confidence`` (``t_quantile(2) == 4.303``)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    return float(stats.t.ppf((1.0 + confidence) / 2.0, df))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean and Student-t confidence interval of ``values`` (e.g. one value per seed).

    Returns ``{"mean": m, "ci": [lo, hi], "values": [...]}``. A single value has no interval
    (``ci`` None: one seed says nothing about the spread, and a zero-width interval would claim
    certainty); no values give ``{"mean": None, "ci": None, "values": []}``.
    """
    vals = [float(v) for v in values]
    if any(not math.isfinite(v) for v in vals):
        raise ValueError(f"values must be finite, got {vals}")
    n = len(vals)
    if n == 0:
        return {"mean": None, "ci": None, "values": []}
    m = sum(vals) / n
    if n == 1:
        return {"mean": m, "ci": None, "values": vals}
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    half = t_quantile(n - 1, confidence) * sd / math.sqrt(n)
    return {"mean": m, "ci": [m - half, m + half], "values": vals}


def paired_difference(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean of ``treated[i] - control[i]`` (pairs: the same seed under two conditions), its Student-t
    interval, the paired t-test's p-value and Wilcoxon's signed-rank p-value (None where undefined:
    fewer than two pairs, or every difference zero)."""
    a, b = [float(v) for v in treated], [float(v) for v in control]
    if len(a) != len(b):
        raise ValueError(f"paired values differ in number: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    out = {**mean_ci(diffs, confidence), "p_t": None, "p_wilcoxon": None}
    if len(diffs) >= 2 and any(d != 0 for d in diffs):
        spread = max(diffs) != min(diffs)
        out["p_t"] = float(stats.ttest_rel(a, b).pvalue) if spread else 0.0
        out["p_wilcoxon"] = float(stats.wilcoxon(diffs).pvalue)
    return out


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
