"""Steps to a threshold, resolved step by step, censored where a run ends first, and compared.

Two readings of "when did the run get there":

- on the policy's own samples (`sampled_crossing`): `rollout/*` metrics are computed on the rows
  the policy sampled, before any demonstration replaces one, every step. A single step of a small
  batch is noisy (8 rows at one prompt x G 8), so the rate is pooled over a trailing window of
  the fewest steps holding at least `MIN_ROWS` sampled rows (`window_for`); the resolution is one
  step.
- on the held-out grid (`grid_crossing`): the in-domain evaluations during training, every
  `eval_steps` steps; a crossing at step s means "somewhere in (s - eval_steps, s]".

A run that never reaches the level within its budget is censored at the budget, not dropped:
`km_median` is the Kaplan-Meier median over seeds (None when fewer than half the seeds got
there: "> budget"), and `speedup` compares two arms seed by seed, a censored time entering as the
budget, which makes that seed's ratio a bound ("at least" or "at most"), never a guess past it.
`holm` adjusts a table's p-values for the number of tests in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core.statistics import t_quantile

MIN_ROWS = 32  # sampled rows pooled per reading of a rate (one step at 4 prompts x G 8)


def window_for(rows_per_step: int, min_rows: int = MIN_ROWS) -> int:
    """The fewest consecutive steps whose sampled rows number at least `min_rows`."""
    if rows_per_step < 1 or min_rows < 1:
        raise ValueError(f"need rows_per_step >= 1 and min_rows >= 1, got {rows_per_step}, {min_rows}")
    return math.ceil(min_rows / rows_per_step)


def sampled_crossing(steps: Sequence[int], values: Sequence[float], level: float, window: int = 1) -> int | None:
    """First step at which the mean of the last `window` logged values (equal rows per step, so the
    pooled rate) reaches `level`; the first `window - 1` steps, with too few rows, never count."""
    if len(steps) != len(values):
        raise ValueError(f"steps ({len(steps)}) and values ({len(values)}) differ in length")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    for i in range(window - 1, len(values)):
        if sum(values[i - window + 1 : i + 1]) / window >= level:
            return int(steps[i])
    return None


def grid_crossing(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """First held-out evaluation step whose value reaches `level` (the grid's own resolution)."""
    return next((int(s) for s, v in zip(steps, values) if v is not None and v >= level), None)


def km_median(times: Sequence[int | None], budget: int) -> float | None:
    """Kaplan-Meier median of steps to a threshold over seeds; None (a time) is censored at `budget`.

    With no censoring before the last event (the only kind here: every run shares one budget) the
    survival curve drops by 1/n at each reached time; the median is the first time where it falls
    to 0.5 or below, averaged with the next time when it lands on 0.5 exactly (the sample median's
    convention). None: fewer than half the seeds reached it (the median lies beyond the budget)."""
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
    """control / treated steps for one seed, and whether it is exact ('='), a lower bound ('>=':
    the control never got there, so it took at least the budget) or an upper bound ('<=').
    Both censored, or a time of 0 (reached before training): no ratio."""
    if control is None and treated is None:
        return None, "both censored"
    c = budget if control is None else control
    t = budget if treated is None else treated
    if c <= 0 or t <= 0:
        return None, "reached at step 0"
    kind = ">=" if control is None else "<=" if treated is None else "="
    return c / t, kind


def speedup(control: Sequence[int | None], treated: Sequence[int | None], budget: int) -> dict:
    """Seed-by-seed speed-up control / treated in steps: the geometric mean and a 95 % t-interval on
    the log ratios (seeds with a ratio; a bound enters at its bound, so the summary is then a bound
    too: `kind` '>=' when some control never reached it, '<=' when some treated one did not)."""
    if len(control) != len(treated):
        raise ValueError(f"paired seeds differ in number: {len(control)} and {len(treated)}")
    per_seed = [seed_ratio(c, t, budget) for c, t in zip(control, treated)]
    logs = [math.log(r) for r, _ in per_seed if r is not None]
    kinds = {k for r, k in per_seed if r is not None}
    bounds = kinds - {"="}
    kind = "mixed" if len(bounds) > 1 else next(iter(bounds), "=")
    out = {"ratios": [r for r, _ in per_seed], "kinds": [k for _, k in per_seed], "n": len(logs), "kind": kind}
    if not logs:
        return {**out, "ratio": None, "ci": None}
    mean = sum(logs) / len(logs)
    if len(logs) < 2:
        return {**out, "ratio": math.exp(mean), "ci": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    half = t_quantile(len(logs) - 1) * sd / math.sqrt(len(logs))
    return {**out, "ratio": math.exp(mean), "ci": [math.exp(mean - half), math.exp(mean + half)]}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are skipped and stay None)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(present), [None] * len(pvalues), 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out
