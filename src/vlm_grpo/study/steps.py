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
`core.statistics` holds what follows from that (the Kaplan-Meier median, speed-up bounds) beside
the project's other statistical definitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
