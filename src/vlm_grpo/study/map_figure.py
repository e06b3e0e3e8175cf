"""The injection map as a heat map: one row per factor level, one column per measure and arm.

Left panel: the speed-up of injection (none / injection, steps to 90 % sampled answer-present and
to 70 % held-out accuracy), coloured on a log scale around 1; right panel: the transfer
difference in points, coloured around 0. Every tile prints its number and 95 % interval; a tile
whose interval excludes the null value is framed; a combination not run is grey.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SPEED = (("speedup_sampled_present_90", "90 % AP\nsampled"), ("speedup_heldout_accuracy_70", "70 % acc\nheld-out"))


def _tile(comparison: Mapping | None, key: str) -> tuple[float, str, bool]:
    """(colour value, text, interval excludes the null) of one tile; NaN colour: not run."""
    if comparison is None:
        return math.nan, "not run", False
    if key == "transfer":
        stat = comparison.get("transfer_difference") or {}
        if stat.get("mean") is None:
            return math.nan, "-", False
        ci = stat.get("ci")
        text = f"{stat['mean'] * 100:+.1f}" + (f"\n[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else "")
        return stat["mean"] * 100, text, bool(ci) and (ci[0] > 0 or ci[1] < 0)
    stat = comparison[key]
    if stat.get("ratio") is None:
        return math.nan, "-", False
    sign = {"=": "", ">=": ">=", "<=": "<=", "mixed": "~"}[stat["kind"]]
    ci = stat.get("ci")
    text = f"{sign}{stat['ratio']:.2f}x" + (f"\n[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return math.log2(stat["ratio"]), text, bool(ci) and (ci[0] > 1 or ci[1] < 1)


def _panel(ax, rows, columns, by_key, title: str, limit: float, cmap: str) -> None:
    values = np.full((len(rows), len(columns)), np.nan)
    for i, (_, _, cell) in enumerate(rows):
        for j, (arm, key, _) in enumerate(columns):
            value, text, excludes = _tile(by_key.get((cell, arm)), key)
            values[i, j] = value
            ax.text(j, i, text, ha="center", va="center", fontsize=7.5)
            if excludes:
                ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2, color="black"))
    colours = matplotlib.colormaps[cmap].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), [label for _, _, label in columns], fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{factor}: {level}" for factor, level, _ in rows], fontsize=8)
    ax.set_title(title, fontsize=10)
    return image


def plot_map(built: Mapping, rows: Sequence[tuple[str, str, str]], out: str | Path) -> Path:
    """Two heat maps (speed-up; transfer difference) over the map's factor levels and injection arms."""
    by_key = {(c["cell"], c["arm"]): c for c in built["comparisons"]}
    arms = list(dict.fromkeys(c["arm"] for c in built["comparisons"]))
    speed = [(arm, key, f"{arm}\n{label}") for arm in arms for key, label in SPEED]
    transfer = [(arm, "transfer", arm) for arm in arms]
    fig = Figure(figsize=(4 + 1.6 * len(speed) + 1.3 * len(transfer), 1.2 + 0.55 * len(rows)))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [len(speed), len(transfer)]})
    image = _panel(left, rows, speed, by_key, "speed-up of injection (none / injection, steps)", 2.0, "RdBu")
    fig.colorbar(image, ax=left, label="log2 speed-up", shrink=0.8)
    image = _panel(right, rows, transfer, by_key, "transfer: injection - none (points)", 15.0, "RdBu")
    right.set_yticks([])
    fig.colorbar(image, ax=right, label="points", shrink=0.8)
    fig.suptitle(
        "Guidance-injection map (framed: the 95 % interval excludes no effect; '>=': a bound, plain GRPO "
        "censored at the budget)",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    return out
