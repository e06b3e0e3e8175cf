"""A markdown report from GRPO run directories, a study and a baseline assessment (no torch, no model).

A run directory holds ``metrics.jsonl`` (one JSON object per line; lines with a ``"step"`` key are
training/eval records) and optionally ``config.yaml``; figures come from `figures.py`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.statistics import steps_to_threshold
from ..evaluation.decision import recommend
from .figures import (
    plot_baseline,
    plot_condition_curves,
    plot_cross_domain,
    plot_injection_vs_none,
    plot_learning_curves,
    plot_speed_vs_transfer,
    plot_two_phase,
)
from .measures import STEP_MEASURES
from .runs import ACC, NP, Run, load_run, present_word
from .tables import _cell, _step_headers, _steps_cell

# ----------------------------------------------------------------------------- report


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _run_table(runs: Sequence[Run]) -> list[str]:
    datasets = sorted({d for r in runs for d in r.eval_datasets})
    head = (
        ["run", "final step", present_word(runs), "accuracy"]
        + [f"eval {d} acc" for d in datasets]
        + [f"steps to {t:.0%} sampled {present_word(runs)}" for t in (0.5, 0.9)]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        steps = [rec["step"] for rec in r.metrics if "step" in rec]
        np_steps, np_vals = r.series(NP)
        row = [
            r.label,
            max(steps) if steps else None,
            np_vals[-1] if np_vals else None,
            (r.series(ACC)[1] or [None])[-1],
        ]
        row += [(r.series(f"eval/{d}/accuracy")[1] or [None])[-1] for d in datasets]
        row += [steps_to_threshold(np_steps, np_vals, t) for t in (0.5, 0.9)]
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return lines


def _study_table(study: Mapping) -> list[str]:
    """What was run, then per condition the accuracies and the named step thresholds (tables.py's
    cells: one seed is marked as such, never given an empty interval)."""
    runs = {c["name"]: len(c.get("seeds") or []) for c in study["conditions"]}
    heads = _step_headers(study) if {"threshold", "in_domain"} <= set(study) else [n for n, _, _ in STEP_MEASURES]
    lines = [
        f"Study `{study.get('preset', '-')}`: {study.get('model', '-')}, {study.get('max_steps', '?')} steps, "
        f"{study.get('seeds', '?')} seed(s) per condition; greedy accuracy on "
        f"{study.get('eval_n', '?')} held-out samples; steps "
        f"read on the held-out grid every {study.get('eval_steps') or '?'} steps (a step count is only resolved "
        "to that grid).",
        "",
        "| condition | seeds | in-domain accuracy | transfer accuracy | " + " | ".join(heads) + " |",
        "|---|---|---|---|" + "---|" * len(heads),
    ]
    for c in study["conditions"]:
        stats = [c.get(name) or {} for name, _, _ in STEP_MEASURES]
        # A study.json written before Kaplan-Meier medians were recorded has means only.
        steps = [_steps_cell(t, runs[c["name"]]) if "median" in t else _cell(t, percent=False) for t in stats]
        lines.append(
            f"| {c['name']} | {runs[c['name']]} | {_cell(c['in_domain_accuracy'])} | {_cell(c['transfer_accuracy'])} | "
            + " | ".join(steps)
            + " |"
        )
    return lines


def _baseline_table(assessment: Mapping) -> list[str]:
    lines = [
        "| prompt style | answer-present rate | accuracy | band | viability | advice (multi-domain) |",
        "|---|---|---|---|---|---|",
    ]
    for style, a in assessment.items():
        rate = a.get("answer_present_rate")
        rec = recommend(rate) if rate is not None else {}
        lines.append(
            f"| {style} | {_fmt(rate)} | {_fmt(a.get('accuracy'))} | "
            f"{rec.get('band', '-')} | {rec.get('viability', '-')} | "
            f"{rec.get('multi_domain', '-')} |"
        )
    return lines


def report_inputs(
    folders: Sequence[str | Path], study_json: str | Path | None = None
) -> tuple[list[Path], Path | None]:
    """(run folders, study.json) from what a user names: a run folder (metrics.jsonl) stands for
    itself; a study folder (what `vlm-grpo study` writes: study.json and runs/<condition>-seed<k>/)
    for every run in it that has logged metrics (one still to train has none yet), and for its
    study.json unless `study_json` is given."""
    runs: list[Path] = []
    studies = [Path(study_json)] if study_json is not None else []
    for folder in map(Path, folders):
        if (folder / "metrics.jsonl").is_file():
            runs.append(folder)
        elif (folder / "study.json").is_file() or (folder / "runs").is_dir():
            runs += sorted(d for d in (folder / "runs").glob("*") if (d / "metrics.jsonl").is_file())
            if study_json is None and (folder / "study.json").is_file():
                studies.append(folder / "study.json")
        else:
            raise FileNotFoundError(
                f"{folder}: neither a run folder (with metrics.jsonl) nor a study folder (with study.json "
                "or runs/); give the output_dir of `vlm-grpo train` or the --out of `vlm-grpo study`"
            )
    if len(studies) > 1:
        raise ValueError(f"one study per report: got {', '.join(map(str, studies))}; report each on its own")
    return runs, (studies[0] if studies else None)


def write_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    study_json: str | Path | None = None,
    assessment_json: str | Path | None = None,
) -> Path:
    """Write ``out_dir/report.md`` with every figure whose inputs exist, plus tables."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [load_run(d) for d in run_dirs]
    md = ["# GRPO training report", ""]

    def figure(title: str, fname: str, available: bool, why: str, make) -> None:
        md.extend([f"## {title}", ""])
        if available:
            md.extend([f"![{title}]({make(out_dir / fname).name})", ""])
        else:
            md.extend([f"_Skipped: {why}._", ""])

    _run_figures(runs, figure)
    figure(
        "Cross-domain transfer",
        "cross_domain.png",
        study_json is not None,
        "no study.json given",
        lambda p: plot_cross_domain(study_json, p),
    )
    if study_json:
        _study_section(json.loads(Path(study_json).read_text()), runs, md, figure)
    assessment = json.loads(Path(assessment_json).read_text()) if assessment_json else None
    figure(
        "Baseline assessment",
        "baseline.png",
        assessment is not None,
        "no assessment.json given",
        lambda p: plot_baseline(assessment, p),
    )
    if assessment:
        md.extend(_baseline_table(assessment) + [""])
    if runs:
        md.extend(
            [
                "## Run summary",
                "",
                "Final logged values; steps to a level = first step whose sampled answer-present rate "
                "(the policy's own rows, one step at a time) reaches it.",
                "",
            ]
        )
        md.extend(_run_table(runs) + [""])
    path = out_dir / "report.md"
    path.write_text("\n".join(md))
    return path


def _study_section(study: Mapping, runs: list[Run], md: list[str], figure) -> None:
    """The study's table, then speed against transfer and the held-out curves per condition."""
    md.extend(_study_table(study) + [""])
    md.extend(what_it_shows(study))
    speed = "Speed against transfer"
    figure(speed, "speed_vs_transfer.png", True, "", lambda p: plot_speed_vs_transfer(study, p))
    figure(
        "Learning curves per condition (held-out, mean over seeds)",
        "condition_curves.png",
        bool(runs),
        "no run directories given",
        lambda p: plot_condition_curves(study, runs, p),
    )


def what_it_shows(study: Mapping) -> list[str]:
    """A few sentences read off the study's numbers: each pair's differences, set against what the
    number of seeds can resolve (with one seed, the held-out sample's own noise; with several, the
    paired interval over seeds)."""
    pairs, n = study.get("pairs") or [], int(study.get("eval_n") or 0)
    if not pairs:
        return []
    lines, seeds = ["## What this run shows", ""], min(len(p.get("seeds") or []) for p in pairs)
    by_name = {c["name"]: c for c in study["conditions"]}
    for pair in pairs:
        parts = []
        for key, label in (("in_domain_accuracy", "in-domain"), ("transfer_accuracy", "transfer")):
            diff = pair.get(key) or {}
            if diff.get("mean") is not None:
                noise = _held_out_noise(by_name, pair, key, n)
                parts.append(f"{label} {_difference_text(diff, seeds, noise)}")
        if parts:
            lines.append(f"- `{pair['treated']}` against `{pair['control']}`: " + "; ".join(parts) + ".")
    lines += ["", _trust_sentence(seeds, n, study.get("eval_steps")), ""]
    return lines


def _difference_text(diff: Mapping, seeds: int, noise: float) -> str:
    """'+1.2 points [-0.5, +2.9], not resolved' over seeds; with one seed, against the held-out noise."""
    text = f"{100 * diff['mean']:+.1f} points"
    if seeds >= 2 and diff.get("ci"):
        low, high = diff["ci"]
        verdict = "resolved" if low > 0 or high < 0 else "not resolved"
        return f"{text} [{100 * low:+.1f}, {100 * high:+.1f}], {verdict}"
    verdict = "more than" if abs(diff["mean"]) > noise else "within"
    return f"{text}, {verdict} the held-out noise of ±{100 * noise:.1f}"


def _held_out_noise(by_name: Mapping, pair: Mapping, key: str, n: int) -> float:
    """Half-width of the 95 % interval of a difference between two accuracies, each measured once on n
    held-out samples: what one seed cannot tell apart even before seed-to-seed spread."""
    p = [(by_name[pair[side]].get(key) or {}).get("mean") or 0.0 for side in ("treated", "control")]
    return 1.959964 * math.sqrt(sum(q * (1 - q) for q in p) / max(n, 1))


def _trust_sentence(seeds: int, n: int, grid: int | None) -> str:
    resolution = f" Steps are read every {grid} steps: a step count is an interval of that width." if grid else ""
    if seeds >= 2:
        return f"Intervals are 95 % over {seeds} paired seeds.{resolution}"
    return (
        f"One seed per condition: each accuracy is one draw of {n} held-out samples, and training from another "
        "seed moves it further, so a difference within the noise above is not a finding, and one outside it "
        "is one seed's; `--seeds 5` gives intervals over seeds." + resolution
    )


def _run_figures(runs: list[Run], figure) -> None:
    """Learning curves, each run's two phases, and injection against none."""
    modes = {r.injection_mode for r in runs}
    figure(
        "Learning curves",
        "learning_curves.png",
        bool(runs),
        "no run directories given",
        lambda p: plot_learning_curves(runs, p),
    )
    for i, r in enumerate(runs):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in r.name)
        figure(
            f"Two-phase learning: {r.name}", f"two_phase_{i}_{safe}.png", True, "", lambda p, r=r: plot_two_phase(r, p)
        )
    figure(
        "Injection vs none",
        "injection_vs_none.png",
        len(modes) >= 2,
        f"need runs with at least two injection modes (found {sorted(modes)})",
        lambda p: plot_injection_vs_none(runs, p),
    )
