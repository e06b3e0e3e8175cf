"""Statistics helpers for assessments and studies, on scipy.stats.

- :func:`wilson_interval` -- Wilson score interval for a binomial proportion.
- :func:`signal_probability` -- P(a GRPO group of G samples has >= 1 parseable answer).
- :func:`t_quantile` -- two-sided Student-t critical value.
- :func:`mean_ci` -- mean with a Student-t confidence interval (e.g. over seeds); one value has none.
- :func:`paired_difference` -- mean paired difference (e.g. injection minus none, seed by seed) with
  its t-interval, the paired t-test's and Wilcoxon's signed-rank p-values.
- :func:`steps_to_threshold` -- first logged step at which a metric reaches a threshold.

The three definitions every table of the project uses, here and nowhere else:

- a proportion's interval (:func:`rate_interval`): rates and accuracies over seeds get the t-interval
  over seeds kept inside [0, 1]; one seed, or seeds that all scored alike, get Wilson's interval
  over the pooled samples, never a zero-width one;
- a family of tests (:func:`holm_family`): Holm adjusts over one table's paired accuracy tests,
  in-domain and transfer together (every row the table prints, both columns);
- censoring (:func:`km_median`, :func:`speedup`): a seed that never reached a level is censored at
  the budget; a ratio with a censored side is a bound and never enters a t-interval, and an
  interval of step ratios stays inside what the evaluation grid can resolve.
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
    "rate_interval",
    "holm",
    "holm_family",
    "km_median",
    "seed_range",
    "seed_ratio",
    "speedup",
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


def rate_interval(values: Sequence[float], samples_per_seed: int = 0, confidence: float = 0.95) -> dict:
    """A proportion over seeds (an accuracy, an answer or call rate): ``mean_ci`` with its interval
    kept inside [0, 1]; where the seeds do not spread (one seed, or all alike) Wilson's interval over
    the ``samples_per_seed`` x seeds pooled samples (``ci_kind`` "wilson"; no samples: no interval)."""
    out = mean_ci(values, confidence)
    if out["mean"] is None:
        return out
    if out["ci"] is not None and out["ci"][1] > out["ci"][0]:
        out["ci"] = [max(0.0, out["ci"][0]), min(1.0, out["ci"][1])]
        return out
    n = samples_per_seed * len(out["values"])
    if n:
        out["ci"], out["ci_kind"] = list(wilson_interval(round(out["mean"] * n), n)), "wilson"
    else:
        out["ci"] = None
    return out


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are skipped and stay None)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(present), [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def holm_family(tests: Sequence[dict | None]) -> None:
    """Add ``p_holm`` to each test (a ``paired_difference`` result) of one family: one table's paired
    accuracy tests, in-domain and transfer together. A test without a p-value gets None."""
    adjusted = holm([t.get("p_t") if t else None for t in tests])
    for test, p in zip(tests, adjusted):
        if test is not None:
            test["p_holm"] = p


def km_median(times: Sequence[int | None], budget: int) -> float | None:
    """Kaplan-Meier median of steps to a threshold over seeds; None (a time) is censored at `budget`.

    With one shared budget no seed is censored before the last event, so the survival curve drops by
    1/n at each reached time; the median is the first time where it falls below 0.5, averaged with
    the next time when it lands on 0.5 exactly. None: fewer than half the seeds reached it."""
    n = len(times)
    if n == 0:
        return None
    if any(t is not None and (t < 0 or t > budget) for t in times):
        raise ValueError(f"times must lie in [0, budget={budget}], got {list(times)}")
    reached = sorted(t for t in times if t is not None)
    for i, t in enumerate(reached):
        survival = 1 - (i + 1) / n
        if survival < 0.5 - 1e-12:
            return float(t)
        if abs(survival - 0.5) <= 1e-12:
            return (t + reached[i + 1]) / 2 if i + 1 < len(reached) else None
    return None


def seed_range(times: Sequence[int | None], budget: int) -> tuple[int, str]:
    """(lowest step, highest as text) over seeds: a censored seed reads '>budget'."""
    if not times:
        raise ValueError("no seeds")
    reached = [t for t in times if t is not None]
    low = min(reached) if reached else budget
    high = f">{budget}" if len(reached) < len(times) else str(max(reached))
    return low, high


def seed_ratio(control: int | None, treated: int | None, budget: int) -> tuple[float | None, str]:
    """control / treated steps for one seed, and whether it is exact ('='), a lower bound ('>=': the
    control never got there, so it took at least the budget) or an upper bound ('<=').
    Both censored, or a time of 0 (reached before training): no ratio."""
    if control is None and treated is None:
        return None, "both censored"
    c = budget if control is None else control
    t = budget if treated is None else treated
    if c <= 0 or t <= 0:
        return None, "reached at step 0"
    kind = ">=" if control is None else "<=" if treated is None else "="
    return c / t, kind


def speedup(control: Sequence[int | None], treated: Sequence[int | None], budget: int, grid: int = 1) -> dict:
    """Seed-by-seed speed-up control / treated in steps: the geometric mean over the seeds with a
    ratio. Exact ratios only get a 95 % t-interval on the logs, clipped to what a `grid`-step reading
    in `budget` steps can resolve ([grid / budget, budget / grid]). A censored seed makes the mean a
    bound (`kind` '>=' or '<='), with no interval; bounds both ways ('mixed') give no ratio."""
    if len(control) != len(treated):
        raise ValueError(f"paired seeds differ in number: {len(control)} and {len(treated)}")
    per_seed = [seed_ratio(c, t, budget) for c, t in zip(control, treated)]
    logs = [math.log(r) for r, _ in per_seed if r is not None]
    bounds = {k for r, k in per_seed if r is not None} - {"="}
    kind = "mixed" if len(bounds) > 1 else next(iter(bounds), "=")
    out = {"ratios": [r for r, _ in per_seed], "kinds": [k for _, k in per_seed], "n": len(logs), "kind": kind}
    out["censored"] = sum(k != "=" for r, k in per_seed if r is not None)
    if not logs or kind == "mixed":
        return {**out, "ratio": None, "ci": None}
    mean = sum(logs) / len(logs)
    if len(logs) < 2 or kind != "=":
        return {**out, "ratio": math.exp(mean), "ci": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    half = t_quantile(len(logs) - 1) * sd / math.sqrt(len(logs))
    low, high = grid / budget, budget / grid
    ci = [min(max(math.exp(mean - half), low), high), min(max(math.exp(mean + half), low), high)]
    return {**out, "ratio": math.exp(mean), "ci": ci}
