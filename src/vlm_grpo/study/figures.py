"""Figures of runs, studies and baseline assessments (no torch, no model).

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot state) inside a
temporary ``rc_context``, so importing this module changes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..core.statistics import mean_ci, steps_to_threshold
from .runs import ACC, NP, REW, Run, config_value, present_word, smooth

_STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 11,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
}
_COLORS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
)
_LINESTYLES = ("-", "--", ":", "-.")


# ----------------------------------------------------------------------------- figures


def _new_figure(nrows: int = 1, ncols: int = 1, size=(8, 5)):
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Figure, out: str | Path, rect=(0, 0, 1, 1)) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=rect)
    fig.savefig(out, dpi=150)
    return out


def _raw_and_smooth(ax, steps, vals, color, label, window=9, ls="-") -> None:
    if not steps:
        return
    ax.plot(steps, vals, color=color, alpha=0.25, lw=1, ls=ls)
    ax.plot(steps, smooth(vals, window), color=color, lw=2, ls=ls, label=label)


def _finish(ax, title: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


def plot_learning_curves(runs: Sequence[Run], out: str | Path) -> Path:
    """2x2 panels: reward, sampled number-present rate, sampled accuracy, held-out accuracy."""
    with matplotlib.rc_context(_STYLE):
        fig, axes = _new_figure(2, 2, size=(13, 9))
        panels = [
            (REW, "mean reward", "reward"),
            (NP, f"sampled {present_word(runs)} rate", "rate"),
            (ACC, "sampled accuracy", "accuracy"),
        ]
        for ax, (key, title, ylabel) in zip(axes.flat, panels):
            for i, run in enumerate(runs):
                _raw_and_smooth(ax, *run.series(key), _COLORS[i % len(_COLORS)], run.label)
            _finish(ax, title, ylabel, legend=False)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if handles:  # one shared legend below the panels, so long labels hide no data
            fig.legend(handles, labels, loc="lower center", ncol=1 if len(runs) > 2 else 2)
        ax = axes[1, 1]
        datasets = sorted({d for run in runs for d in run.eval_datasets})
        for i, run in enumerate(runs):
            for j, ds in enumerate(datasets):
                steps, vals = run.series(f"eval/{ds}/accuracy")
                if steps:
                    ax.plot(
                        steps,
                        vals,
                        marker="o",
                        ms=4,
                        color=_COLORS[i % len(_COLORS)],
                        ls=_LINESTYLES[j % len(_LINESTYLES)],
                        label=f"{run.name}: {ds}",
                    )
        _finish(ax, "held-out accuracy (linestyle = dataset)", "accuracy")
        return _save(fig, out, rect=(0, min(0.3, 0.03 * len(runs) + 0.02), 1, 1))


def plot_two_phase(run: Run, out: str | Path) -> Path:
    """Format (number-present rate) vs accuracy over steps, with 0.5 / 0.9 crossings."""
    with matplotlib.rc_context(_STYLE):
        fig, axes = _new_figure(size=(9, 5.5))
        ax = axes[0, 0]
        for key, name, color in [(NP, f"{present_word([run])} rate", "tab:blue"), (ACC, "accuracy", "tab:red")]:
            steps, vals = run.series(key)
            _raw_and_smooth(ax, steps, vals, color, name)
            for thr, ls in [(0.5, "--"), (0.9, ":")]:
                hit = steps_to_threshold(steps, vals, thr)
                if hit is not None:
                    ax.axvline(hit, color=color, ls=ls, lw=1.2, label=f"{name} first >= {thr} (step {hit})")
        for thr in (0.5, 0.9):
            ax.axhline(thr, color="gray", lw=0.8, alpha=0.5)
        ax.set_ylim(-0.02, 1.02)
        _finish(ax, f"two-phase learning: {run.label}", "rate (sampled rollouts)")
        return _save(fig, out)


def plot_injection_vs_none(runs: Sequence[Run], out: str | Path) -> Path:
    """Rewards and number-present rates of all runs, coloured by injection mode."""
    with matplotlib.rc_context(_STYLE):
        fig, axes = _new_figure(1, 2, size=(13, 5))
        modes = sorted({r.injection_mode for r in runs})
        colors = {m: _COLORS[i % len(_COLORS)] for i, m in enumerate(modes)}
        panels = [(REW, "mean reward"), (NP, f"sampled {present_word(runs)} rate")]
        for ax, (key, title) in zip(axes.flat, panels):
            seen: set[str] = set()
            for run in runs:
                mode = run.injection_mode
                label = None if mode in seen else f"injection.mode={mode}"
                seen.add(mode)
                _raw_and_smooth(ax, *run.series(key), colors[mode], label)
            _finish(ax, f"{title} by injection mode", title.split()[-1])
        return _save(fig, out)


def _study_groups(study: Mapping) -> tuple[list[str], dict[str, list[dict]]]:
    names = [c["name"] for c in study["conditions"]]
    groups = {
        "in-domain": [c.get("in_domain_accuracy") or {} for c in study["conditions"]],
        "transfer": [c.get("transfer_accuracy") or {} for c in study["conditions"]],
    }
    return names, groups


def _run_groups(runs: Sequence[Run]) -> tuple[list[str], dict[str, list[dict]]]:
    """Condition = run name minus seed; per dataset, mean_ci of final eval accuracy."""
    by_cond: dict[str, list[Run]] = {}
    for r in runs:
        cond = f"{config_value(r.config, 'prompt.style', '?')}/{r.injection_mode}"
        by_cond.setdefault(cond, []).append(r)
    datasets = sorted({d for r in runs for d in r.eval_datasets})
    groups = {
        ds: [
            mean_ci([r.series(f"eval/{ds}/accuracy")[1][-1] for r in rs if r.series(f"eval/{ds}/accuracy")[1]])
            for rs in by_cond.values()
        ]
        for ds in datasets
    }
    return list(by_cond), groups


def _bar_figure(
    names: Sequence[str], groups: Mapping[str, list[dict]], out: str | Path, xlabel: str, ylabel: str, title: str
) -> Path:
    """Grouped bars of {"mean", "ci"} dicts with asymmetric CI error bars (none if no CI)."""
    with matplotlib.rc_context(_STYLE):
        fig, axes = _new_figure(size=(max(7, 2 + 0.6 * len(names) * (len(groups) + 1)), 5.5))
        ax, width = axes[0, 0], 0.8 / max(1, len(groups))
        for j, (gname, stats) in enumerate(groups.items()):
            xs = [i + (j - (len(groups) - 1) / 2) * width for i in range(len(names))]
            means = [s.get("mean") or 0.0 for s in stats]
            cis = [s.get("ci") or [math.nan, math.nan] for s in stats]
            errs = [
                [max(0.0, m - c[0]) if c[0] == c[0] else math.nan for m, c in zip(means, cis)],
                [max(0.0, c[1] - m) if c[1] == c[1] else math.nan for m, c in zip(means, cis)],
            ]
            ax.bar(xs, means, width, yerr=errs, capsize=4, label=gname, color=_COLORS[j % len(_COLORS)])
        ax.set_xticks(range(len(names)), names, rotation=15, ha="right")
        ax.set_ylim(0, 1.2)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper center", ncol=max(1, len(groups)))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        return _save(fig, out)


def plot_cross_domain(study_or_runs: Mapping | str | Path | Sequence[Run], out: str | Path) -> Path:
    """In-domain vs transfer accuracy per condition with 95 % CI error bars.

    Takes a ``study.json`` dict/path, or a list of runs (then: one bar per eval
    dataset, mean and t-CI over the seeds of a prompt-style/injection-mode condition).
    """
    src = study_or_runs
    if isinstance(src, (str, Path)):
        src = json.loads(Path(src).read_text())
    names, groups = _study_groups(src) if isinstance(src, Mapping) else _run_groups(src)
    return _bar_figure(names, groups, out, "condition", "accuracy (mean, 95% CI)", "in-domain vs transfer accuracy")


def plot_baseline(assessment: Mapping | str | Path, out: str | Path) -> Path:
    """Base-model answer-present rate and accuracy (+ greedy accuracy if given) per prompt style."""
    if isinstance(assessment, (str, Path)):
        assessment = json.loads(Path(assessment).read_text())
    styles = list(assessment)
    groups = {
        key: [{"mean": assessment[s].get(key), "ci": assessment[s].get(f"{key}_ci")} for s in styles]
        for key in ("answer_present_rate", "accuracy", "greedy_accuracy")
        if any(key in assessment[s] for s in styles)
    }
    return _bar_figure(styles, groups, out, "prompt style", "rate (95% CI where given)", "base model before training")


def plot_speed_vs_transfer(study: Mapping | str | Path, out: str | Path) -> Path:
    """Per condition: steps to 90 % held-out answer-present (x: the Kaplan-Meier median over seeds, a
    seed that never got there censored at the budget, bars from the lowest to the highest seed)
    against final transfer accuracy (y, its 95 % interval over seeds); a condition whose median is
    past the budget sits at the right edge."""
    if isinstance(study, (str, Path)):
        study = json.loads(Path(study).read_text())
    key, transfer = "steps_to_answer_present_90", ", ".join(study["transfer"]) or study["in_domain"]
    with matplotlib.rc_context(_STYLE):
        fig, axes = _new_figure(size=(9, 6))
        ax = axes[0, 0]
        edge, count = study["max_steps"] * 1.05, len(study["conditions"])
        for i, c in enumerate(study["conditions"]):
            x, y = c.get(key) or {}, c.get("transfer_accuracy") or {}
            if y.get("mean") is None:
                continue
            reached = f"{x.get('reached', 0)}/{len(c['seeds'])}"
            # Held-out evaluations run every few steps, so conditions often tie: a tie is drawn as one
            # (markers differ and show through), never moved apart.
            median = x.get("median")
            mx = edge if median is None else median
            ax.errorbar(
                [mx],
                [y["mean"]],
                xerr=None if median is None else _crossing_range(x, median, study.get("eval_steps")),
                yerr=_error(y, y["mean"]),
                fmt="osD^v"[(i // len(_COLORS)) % 5] if median is not None else "x",  # colours repeat
                capsize=4,
                color=_COLORS[i % len(_COLORS)],
                alpha=0.75,
                markersize=9 - 4 * i / max(count - 1, 1),  # later conditions smaller: tied markers nest
                label=f"{c['name']} ({reached} reached)",
            )
        if any((c.get(key) or {}).get("median") is None for c in study["conditions"]):
            ax.axvline(study["max_steps"], color="gray", lw=0.8, ls=":")  # right of it: never reached
        grid = study.get("eval_steps")
        ax.set(
            xlabel=f"steps to 90% answer-present on {study['in_domain']}\n(Kaplan-Meier median over seeds; "
            + (f"bars: the {grid}-step evaluation interval the crossing lies in" if grid else "bars")
            + ", widened to the lowest and highest seed; overlapping bars are not resolved)",
            ylabel=f"{transfer} accuracy at the end",
            title=f"speed against transfer ({study['preset']}, 95% intervals)",
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
        return _save(fig, out)


def _crossing_range(stat: Mapping, at: float, grid: int | None) -> list[list[float]]:
    """Where the crossing may lie: after the evaluation before the lowest seed's (held-out rates are
    read every `grid` steps) and up to the highest seed's; one seed's step is a grid interval, not a point."""
    (below,), (above,) = _seed_range(stat, at)
    return [[below + (grid or 0) if float(stat["low"]) > 0 else below], [above]]


def _seed_range(stat: Mapping, at: float) -> list[list[float]]:
    """From the lowest to the highest seed; a censored highest ('>60') reaches the budget."""
    high = stat["high"]
    top = float(stat["budget"]) if str(high).startswith(">") else float(high)
    return [[max(0.0, at - float(stat["low"]))], [max(0.0, top - at)]]


def _error(stat: Mapping, at: float) -> list[list[float]] | None:
    ci = stat.get("ci")
    return None if not ci else [[max(0.0, at - ci[0])], [max(0.0, ci[1] - at)]]


def plot_condition_curves(study: Mapping | str | Path, runs: Sequence[Run], out: str | Path) -> Path:
    """Held-out answer-present rate and accuracy (in-domain, transfer) against step, the mean over
    each condition's seeds (runs are named `<condition>-seed<k>`)."""
    if isinstance(study, (str, Path)):
        study = json.loads(Path(study).read_text())
    in_domain, transfer = study["in_domain"], (study["transfer"] or [study["in_domain"]])[0]
    panels = [
        (f"eval/{in_domain}/answer_present_rate", f"{in_domain}: answer-present rate"),
        (f"eval/{in_domain}/accuracy", f"{in_domain}: accuracy"),
        (f"eval/{transfer}/accuracy", f"{transfer}: accuracy (transfer)"),
    ]
    with matplotlib.rc_context(_STYLE):
        fig, axes = _new_figure(1, 3, size=(18, 5.5))
        for ax, (key, title) in zip(axes.flat, panels):
            for i, c in enumerate(study["conditions"]):
                mine = [r for r in runs if r.name.rsplit("-seed", 1)[0] == c["name"]]
                by_step: dict[int, list[float]] = {}
                for run in mine:
                    for step, value in zip(*run.series(key)):
                        by_step.setdefault(step, []).append(value)
                steps = sorted(by_step)
                color, ls = _COLORS[i % len(_COLORS)], _LINESTYLES[(i // len(_COLORS)) % len(_LINESTYLES)]
                means = [sum(by_step[s]) / len(by_step[s]) for s in steps]
                ax.plot(steps, means, marker="o", ms=3, color=color, ls=ls, label=f"{c['name']} ({len(mine)} seeds)")
            ax.set_ylim(-0.02, 1.02)
            _finish(ax, title, "mean over seeds", legend=False)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))))
        rows = math.ceil(len(labels) / 4)
        return _save(fig, out, rect=(0, min(0.35, 0.06 * rows + 0.02), 1, 1))
