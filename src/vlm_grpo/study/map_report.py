"""The injection map's tables, per-seed values, heat map and the cells `vlm-grpo assess` cites.

`python -m vlm_grpo.study.map_report runs/study-map --out docs/results` reads a map study's run
folders (`vlm-grpo study --preset map`), writes `map.md` (its tables), `map.json` (every run's
readings, per-scene correctness included, so every number can be recomputed), `map-heatmap.png`,
and, with `--advice PATH`, the per-cell summary that `evaluation.map_advice` reads. `--against ARM`
(repeat for more) adds a table of each cell's other arms against ARM there (the distillation
comparison's `--against random`: every arm against the study's injection), with Holm over that
table's tests; map.json keeps the controls. With `--from-json map.json` it rebuilds all of them from
the per-run readings of an earlier map.json, against the controls it names (no run folders needed);
`tests/study/test_doc_numbers.py` checks that the committed files are what that gives.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from .map_measures import STEP_READINGS, arm_summary, compare, holm_adjust, read_run
from .runner import find_preset, load_preset

# Each lab base's sampled answer-present rate under the plain prompt (T 1, 8 per scene, 200 scenes),
# as `python -m vlm_grpo.lab.pretrain measure` wrote it (src/vlm_grpo/lab/weights/MEASUREMENTS.md).
MEASUREMENTS = Path(__file__).resolve().parents[1] / "lab" / "weights" / "measurements_n200.json"


def base_rates(path: Path = MEASUREMENTS) -> dict[str, float]:
    """Sampled answer-present rate per lab base, from the measurements file."""
    data = json.loads(path.read_text())
    return {name: round(m["default_sampled_clevr"]["number_present_rate"], 3) for name, m in data.items()}


FACTORS = (  # (factor, the run key that sets it, its label)
    ("base", "base_rate", "base answer-present rate"),
    ("prompts", "prompts_per_step", "prompts per step"),
    ("group", "num_generations", "group size G"),
    ("lr", "learning_rate", "learning rate"),
)
HEADS = {
    "sampled_present_90": "90 % answer-present, sampled rows",
    "heldout_present_90": "90 % answer-present, held-out",
    "sampled_accuracy_70": "70 % accuracy, sampled rows",
    "heldout_accuracy_70": "70 % accuracy, held-out",
}


def collect(study_dir: Path, preset: str | Path = "map") -> list[dict]:
    """Every finished run of the map (summary.json written) read by `read_run`, in preset order."""
    spec = load_preset(find_preset(preset))
    rates, runs = base_rates(), []
    for condition in spec["conditions"]:
        for folder in sorted((study_dir / "runs").glob(f"{condition['name']}-seed*")):
            if (folder / "summary.json").is_file():
                seed = int(folder.name.rsplit("-seed", 1)[1])
                run = read_run(folder, condition, seed)
                run["base_rate"] = rates.get(run["model"])
                runs.append(run)
    return runs


def setting(run: Mapping) -> dict:
    return {key: run[key] for _, key, _ in FACTORS} | {"model": run["model"]}


def factor_rows(runs: Sequence[dict], centre: str = "central") -> list[tuple[str, str, str]]:
    """(factor label, level text, cell) per row of the heat map: for each factor the cells that differ
    from the centre in it alone, and the centre, ordered by the factor's value."""
    cells = {r["cell"]: setting(r) for r in runs}
    mid = cells[centre]
    rows = []
    for _, key, label in FACTORS:
        mine = [c for c, s in cells.items() if all(s[k] == mid[k] for _, k, _ in FACTORS if k != key)]
        for cell in sorted(mine, key=lambda c: cells[c][key] or 0):
            value = cells[cell][key]
            text = f"{value:.1%}" if key == "base_rate" else f"{value:g}"
            rows.append((label, text, cell))
    return rows


def _arms(runs: Sequence[dict], cell: str) -> list[str]:
    return list(dict.fromkeys(r["arm"] for r in runs if r["cell"] == cell))


def against(runs: Sequence[dict], control: str = "none") -> list[dict]:
    """One comparison table: in each cell that ran `control`, every other arm against it but plain GRPO
    (`none` against a treated arm is the first table's comparison turned round); Holm over the table."""
    cells = list(dict.fromkeys(r["cell"] for r in runs))
    table = [
        compare(runs, cell, arm, control)
        for cell in cells
        if control in _arms(runs, cell)
        for arm in _arms(runs, cell)
        if arm not in (control, "none")
    ]
    holm_adjust(table)
    return table


def build(runs: Sequence[dict], controls: Sequence[str] = ()) -> dict:
    """Arm summaries and comparisons per cell against `none`, and against each of `controls` (under
    `against`, only when some are named); Holm over each accuracy table's p-values."""
    arms = {
        f"{cell}/{arm}": arm_summary([r for r in runs if r["cell"] == cell and r["arm"] == arm])
        for cell in dict.fromkeys(r["cell"] for r in runs)
        for arm in _arms(runs, cell)
    }
    settings = {r["cell"]: setting(r) for r in runs}
    built = {"cells": settings, "arms": arms, "comparisons": against(runs)}
    if controls:
        built["against"] = {control: against(runs, control) for control in controls}
    return built


# ---------------------------------------------------------------- text
def steps_text(stat: Mapping, seeds: int) -> str:
    """'23 [21-26] (3/3)': Kaplan-Meier median [lowest-highest seed], reached/seeds; '>50' censored."""
    values = stat["values"]
    reached = sum(v is not None for v in values)
    low, high = stat["range"]
    median = high if stat["median"] is None else f"{stat['median']:g}"  # None: over half censored
    if seeds == 1:
        return f"{median} (1 seed)"
    return f"{median} [{low}-{high}] ({reached}/{seeds})"


def ratio_text(stat: Mapping) -> str:
    """'1.31x [0.92, 1.86] (n 3)'; a bound (a censored seed) reads '>= 1.67x (2 of 5 censored)' with no
    interval; one seed has none either."""
    if stat.get("ratio") is None:
        kinds = set(stat["kinds"]) | ({"bounds both ways"} if stat.get("kind") == "mixed" else set())
        return "- (" + ", ".join(sorted(k for k in kinds if k not in ("=", ">=", "<="))) + ")"
    sign = {"=": "", ">=": ">= ", "<=": "<= "}[stat["kind"]]
    if stat["kind"] != "=":
        return f"{sign}{stat['ratio']:.2f}x ({stat.get('censored', '?')} of {stat['n']} censored)"
    if stat.get("ci") is None:
        return f"{sign}{stat['ratio']:.2f}x (1 seed)"
    lo, hi = stat["ci"]
    return f"{sign}{stat['ratio']:.2f}x [{lo:.2f}, {hi:.2f}] (n {stat['n']})"


def difference_text(stat: Mapping | None, scenes: Mapping | None) -> str:
    """'-4.2 [-9.0, +0.6] / [-10.1, +1.7], p 0.09, Holm 0.52' (points; seeds / seeds and scenes)."""
    if not stat or stat.get("mean") is None:
        return "-"
    mean = stat["mean"] * 100
    if stat.get("ci") is None:
        return f"{mean:+.1f} (1 seed)"
    lo, hi = (v * 100 for v in stat["ci"])
    text = f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"
    if scenes:
        text += f" / [{scenes['ci'][0] * 100:+.1f}, {scenes['ci'][1] * 100:+.1f}]"
    if stat.get("p_t") is not None:
        text += f", p {stat['p_t']:.2f}, Holm {stat['p_holm']:.2f}"
    return text


def arm_lines(built: Mapping, order: Sequence[str]) -> list[str]:
    """The first table: each arm's steps, accuracies and cost (the teacher's too, where a run had one)."""
    any_arm = next(iter(built["arms"].values()))
    teacher = any("teacher_passes" in arm for arm in built["arms"].values())
    lines = [
        f"Steps: Kaplan-Meier median over seeds [lowest-highest seed] (reached/seeds); a seed that never "
        f"reached the level within the {any_arm['budget']}-step budget is censored ('>{any_arm['budget']}'). "
        "Sampled rows: one-step resolution, the rate pooled over the fewest trailing steps holding >= 32 "
        f"sampled rows (window in the table); held-out: a {any_arm['grid']}-step grid (100 scenes)."
        + (TEACHER_NOTE if teacher else ""),
        "",
        "| cell | arm | "
        + " | ".join(f"steps to {HEADS[n]}" for n, *_ in STEP_READINGS)
        + " | in-domain | transfer | wall (s, training) | samples |"
        + (" teacher passes | teacher (s) |" if teacher else ""),
        "|---|---|" + "---|" * (len(STEP_READINGS) + 4 + 2 * teacher),
    ]
    for cell in order:
        for key, arm in built["arms"].items():
            if not key.startswith(f"{cell}/"):
                continue
            steps = [steps_text(arm[n], arm["seeds"]) for n, *_ in STEP_READINGS]
            steps[0] += f", window {arm['window']}"
            accs = [f"{arm[k]:.1%}" if arm[k] is not None else "-" for k in ("in_domain_accuracy", "transfer_accuracy")]
            compute = f" {arm.get('teacher_passes', 0):,.0f} | {arm.get('teacher_s', 0):.1f} |" if teacher else ""
            lines.append(
                f"| {cell} | {key.split('/')[1]} | " + " | ".join(steps + accs) + f" | {arm['wall_s']:.0f} | "
                f"{arm['samples']:,} |" + compute
            )
    return lines


TEACHER_NOTE = (
    " Samples: completions sampled per run (a supervised warm-up step samples none); teacher passes: "
    "completions the teacher scored per run (every row of each step whose weight is above 0), and its "
    "time; means over seeds."
)
SPEEDUP_NOTE = (
    "in steps, the geometric mean over seeds [95 % t-interval on the log ratios, kept inside what the "
    "reading resolves: 1 to the budget in steps on sampled rows, grid / budget to budget / grid held-out]; "
    "a censored seed enters at the budget, so its ratio, and the mean, is a bound"
)


def comparison_lines(built: Mapping, order: Sequence[str], control: str = "none") -> list[str]:
    """A comparison table: each treated arm against `none` (the first table's injection arms) or against
    another `control` (`build`'s `against`)."""
    if control == "none":
        table = built["comparisons"]
        lines = [
            f"Speed-up: none / injection {SPEEDUP_NOTE} ('>=': plain GRPO never got there) with no interval. "
            "Differences: injection - none in points, mean [95 % t-interval over seeds] / [interval counting "
            "the held-out scene draw too], paired t-test p and Holm's adjustment over the table's accuracy "
            "tests, in-domain and transfer together (one family).",
        ]
        wall = "wall time, injection / none"
    else:
        table = built["against"][control]
        lines = [
            f"Against `{control}`: each cell's other arms (plain GRPO's is the table above turned round). "
            f"Speed-up: {control} / arm {SPEEDUP_NOTE} ('>=': `{control}` never got there) with no interval. "
            f"Differences: arm - {control} in points, as above; Holm's adjustment over this table's accuracy "
            "tests, in-domain and transfer together (one family).",
        ]
        wall = f"wall time, arm / {control}"
    lines += [
        "",
        "| cell | arm | speed-up, 90 % answer-present (sampled) | speed-up, 70 % accuracy (held-out grid) | "
        f"in-domain difference | transfer difference | {wall} |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in order:
        for c in (c for c in table if c["cell"] == cell):
            lines.append(
                f"| {cell} | {c['arm']} | {ratio_text(c['speedup_sampled_present_90'])} | "
                f"{ratio_text(c['speedup_heldout_accuracy_70'])} | "
                f"{difference_text(c.get('in_domain_difference'), c.get('in_domain_with_scenes'))} | "
                f"{difference_text(c.get('transfer_difference'), c.get('transfer_with_scenes'))} | "
                f"{c['wall_ratio']:.2f} |"
            )
    return lines


def tables(built: Mapping, rows: Sequence[tuple[str, str, str]]) -> list[str]:
    """The map's markdown tables: each arm's steps, accuracies and cost; each injection arm against none;
    each arm against every control `build` was given."""
    order = list(dict.fromkeys(cell for _, _, cell in rows))
    lines = [*arm_lines(built, order), "", *comparison_lines(built, order)]
    for control in built.get("against", {}):
        lines += ["", *comparison_lines(built, order, control)]
    return lines


# ---------------------------------------------------------------- files
def advice_cells(built: Mapping) -> list[dict]:
    """Per cell and injection arm, what `assess` cites: the setting and the headline numbers."""
    out = []
    for c in built["comparisons"]:
        cell = built["cells"][c["cell"]]
        transfer = c.get("transfer_difference") or {}
        speed = c["speedup_sampled_present_90"]
        out.append(
            {
                "cell": c["cell"],
                "arm": c["arm"],
                **cell,
                "seeds": len(c["seeds"]),
                "speedup_sampled_present_90": {k: speed.get(k) for k in ("ratio", "ci", "kind")},
                "speedup_heldout_accuracy_70": {
                    k: c["speedup_heldout_accuracy_70"].get(k) for k in ("ratio", "ci", "kind")
                },
                "transfer_difference": {k: transfer.get(k) for k in ("mean", "ci", "p_holm")},
                "transfer_with_scenes": (c.get("transfer_with_scenes") or {}).get("ci"),
            }
        )
    return out


def write(
    study_dir: Path, out: Path, preset: str | Path = "map", advice: Path | None = None, controls: Sequence[str] = ()
) -> dict:
    runs = collect(study_dir, preset)
    if not runs:
        raise ValueError(f"{study_dir}: no finished map runs under runs/")
    command = f"python -m vlm_grpo.study.map_report {study_dir} --out {out}"
    command += "".join(f" --against {control}" for control in controls)
    source = f"vlm-grpo study --preset {Path(str(preset)).stem}"
    return write_files(runs, out, command, advice, source, controls)


def from_json(path: Path) -> tuple[list[dict], str, list[str]]:
    """The per-run readings of an earlier map.json, base rates re-read, the command that made it and
    the controls besides `none` its comparisons were against."""
    data = json.loads(path.read_text())
    rates = base_rates()
    runs = [{**run, "base_rate": rates.get(run["model"])} for run in data["runs"]]
    return runs, data["command"], list(data.get("against", {}))


def rendered(runs: Sequence[dict], command: str, controls: Sequence[str] = ()) -> tuple[dict, str, str]:
    """(built, map.md text, map.json text) from the per-run readings, compared against `none` and `controls`."""
    built = build(runs, controls)
    md = [f"<!-- {command} -->", "", *tables(built, factor_rows(runs)), ""]
    return built, "\n".join(md), json.dumps({"command": command, "runs": list(runs), **built}, indent=1)


def advice_text(built: Mapping, source: str) -> str:
    """The advice file's text: the cells `assess` cites and the command that measured them."""
    return json.dumps({"source": source, "cells": advice_cells(built)}, indent=1) + "\n"


def write_files(
    runs: Sequence[dict], out: Path, command: str, advice: Path | None, source: str, controls: Sequence[str] = ()
) -> dict:
    built, md, data = rendered(runs, command, controls)
    out.mkdir(parents=True, exist_ok=True)
    (out / "map.md").write_text(md)
    (out / "map.json").write_text(data)
    from .map_figure import plot_map

    plot_map(built, factor_rows(runs), out / "map-heatmap.png")
    if advice is not None:
        advice.write_text(advice_text(built, source))
    return built


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vlm_grpo.study.map_report", description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path, nargs="?", help="a map study's --out (or give --from-json)")
    parser.add_argument("--from-json", type=Path, default=None, help="rebuild from an earlier map.json's runs")
    parser.add_argument("--out", type=Path, default=None, help="folder for map.md, map.json, map-heatmap.png")
    parser.add_argument("--preset", default="map")
    parser.add_argument("--advice", type=Path, default=None, help="write the cells `assess` cites here")
    parser.add_argument(
        "--against", action="append", default=None, metavar="ARM", help="also compare every arm with ARM; repeat"
    )
    args = parser.parse_args(argv)
    if args.from_json is not None:
        runs, command, saved = from_json(args.from_json)
        out = args.out or args.from_json.parent
        source = f"vlm-grpo study --preset {Path(str(args.preset)).stem}"
        write_files(runs, out, command, args.advice, source, saved if args.against is None else args.against)
    else:
        out = args.out or args.study_dir / "map"
        write(args.study_dir, out, args.preset, args.advice, args.against or ())
    print(out / "map.md")


if __name__ == "__main__":
    main()
