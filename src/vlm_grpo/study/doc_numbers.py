"""The documentation's study tables, generated from the committed per-seed files under docs/results/.

A page marks each generated table with `<!-- numbers: NAME -->` and `<!-- /numbers -->`;
`python -m vlm_grpo.study.doc_numbers --write` rewrites every marked block of README.md and
docs/*.md from the study.json (or map.json) it names; without it, it fails where a page differs
(`tests/study/test_doc_numbers.py` runs it). Every cell is computed from the per-seed values with
`core.statistics`: proportions with `rate_interval`, step counts with `km_median`, paired
differences with `paired_difference`, and Holm over each table's accuracy tests (`holm_family`); a
map's tables (map.json) through `map_report`, as its map.md has them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from ..core.statistics import holm_family, km_median, paired_difference, rate_interval, seed_range
from .doc_blocks import BLOCKS

ROOT = Path(__file__).resolve().parents[3]
BLOCK = re.compile(r"(<!-- numbers: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /numbers -->)", re.S)


@cache
def study(name: str, root: Path = ROOT) -> dict:
    """docs/results/NAME/study.json."""
    return json.loads((root / "docs" / "results" / name / "study.json").read_text())


def condition(name: str, cond: str, root: Path = ROOT) -> dict:
    return next(c for c in study(name, root)["conditions"] if c["name"] == cond)


def values(name: str, cond: str, key: str, root: Path = ROOT) -> dict[int, float | None]:
    c = condition(name, cond, root)
    return dict(zip(c["seeds"], c[key]["values"]))


def p_text(p: float | None) -> str:
    """Three significant digits, so 0.0499 never prints as 0.050."""
    return "-" if p is None else "1" if p >= 0.9995 else f"{p:.3g}"


def rate(name: str, cond: str, key: str, root: Path = ROOT) -> str:
    """'78.3 [76.6, 80.0]': a proportion over seeds in percent, its interval in range."""
    seeds = [v for v in values(name, cond, key, root).values() if v is not None]
    stat = rate_interval(seeds, study(name, root)["eval_n"])
    if stat["mean"] is None:
        return "-"
    lo, hi = stat["ci"]
    return f"{stat['mean'] * 100:.1f} [{lo * 100:.1f}, {hi * 100:.1f}]"


def steps(name: str, cond: str, key: str, root: Path = ROOT) -> str:
    """'30 [30, 40] (5/5)': Kaplan-Meier median, lowest and highest seed, seeds that reached it."""
    times, budget = list(values(name, cond, key, root).values()), study(name, root)["max_steps"]
    reached = sum(t is not None for t in times)
    if not reached:
        return f"not reached (0/{len(times)})"
    median = km_median(times, budget)
    low, high = seed_range(times, budget)
    return f"{'>' + str(budget) if median is None else f'{median:g}'} [{low}, {high}] ({reached}/{len(times)})"


def difference(name: str, treated: str, control: str, key: str, root: Path = ROOT) -> dict:
    """Seed-by-seed treated - control over the seeds where both have a value."""
    a, b = values(name, treated, key, root), values(name, control, key, root)
    both = [s for s in sorted(set(a) & set(b)) if a[s] is not None and b[s] is not None]
    return {**paired_difference([a[s] for s in both], [b[s] for s in both]), "n": len(both)}


def difference_text(stat: dict, points: bool) -> str:
    """'+6.3 [-2.9, +15.5], p 0.129, Holm 0.517' (points), '-2.0 [-7.6, +3.6], p 0.374 (n 5)' (steps)."""
    scale = 100 if points else 1
    diffs = [d * scale for d in stat["values"]]
    if not diffs:
        return "-"
    count = "" if points else f" (n {stat['n']})"
    if max(diffs) - min(diffs) < 1e-9:
        return f"{diffs[0]:+.1f} on every seed{count}" if diffs[0] else f"0 on every seed{count}"
    lo, hi = (v * scale for v in stat["ci"])
    text = f"{stat['mean'] * scale:+.1f} [{lo:+.1f}, {hi:+.1f}], p {p_text(stat['p_t'])}"
    if "p_holm" in stat:
        text += f", Holm {p_text(stat['p_holm'])}"
        if stat["p_holm"] is not None and stat["p_holm"] < 0.05 and (lo > 0 or hi < 0):
            text = f"**{text}**"
    return text + count


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def conditions_table(spec: dict, root: Path = ROOT) -> list[str]:
    """One row per (label, study, condition); columns from COLUMNS."""
    rows = []
    for label, name, cond in spec["rows"]:
        rows.append([label, *(COLUMNS[col](name, cond, root) for col in spec["columns"])])
    return table(["condition", *spec["head"]], rows)


def pairs_table(spec: dict, root: Path = ROOT) -> list[str]:
    """One row per (label, study, treated, control); Holm over the table's accuracy tests."""
    stats = [
        {col: difference(name, t, c, KEYS[col], root) for col in spec["columns"]} for _, name, t, c in spec["rows"]
    ]
    holm_family([s[col] for s in stats for col in spec["columns"] if col in ("in", "tr")])
    rows = [
        [label, *(difference_text(s[col], col in ("in", "tr")) for col in spec["columns"])]
        for (label, *_), s in zip(spec["rows"], stats)
    ]
    return table(["treated - control", *spec["head"]], rows)


KEYS = {
    "in": "in_domain_accuracy",
    "tr": "transfer_accuracy",
    "ap50": "steps_to_answer_present_50",
    "ap90": "steps_to_answer_present_90",
    "acc": "steps_to_threshold",
}


def _compute(name: str, cond: str, root: Path) -> str:
    c = condition(name, cond, root)
    return f"{c['completions_sampled']['mean']:.0f} / {c['demonstrations_trained']['mean']:.0f}"


def _calls(name: str, cond: str, root: Path) -> str:
    return " / ".join(
        rate(name, cond, key, root).split(" [")[0] + " %"
        for key in ("in_domain_tool_call_rate", "transfer_tool_call_rate")
    )


COLUMNS: dict[str, Callable[[str, str, Path], str]] = {
    "in": lambda n, c, r: rate(n, c, KEYS["in"], r),
    "tr": lambda n, c, r: rate(n, c, KEYS["tr"], r),
    "ap50": lambda n, c, r: steps(n, c, KEYS["ap50"], r),
    "ap90": lambda n, c, r: steps(n, c, KEYS["ap90"], r),
    "acc": lambda n, c, r: steps(n, c, KEYS["acc"], r),
    "compute": _compute,
    "calls": _calls,
}


def map_table(spec: dict, root: Path = ROOT) -> list[str]:
    """Rows of the map's comparison table (map.json), as map.md prints them."""
    from .map_report import build, from_json, ratio_text
    from .map_report import difference_text as map_difference

    runs, _, _ = from_json(root / "docs" / "results" / "map" / "map.json")
    comparisons = {(c["cell"], c["arm"]): c for c in build(runs)["comparisons"]}
    rows = []
    for label, arm, cell, key in spec["rows"]:
        c = comparisons[(cell, key)]
        speeds = [ratio_text(c[f"speedup_{n}"]).split(" (n ")[0] for n in ("sampled_present_90", "heldout_accuracy_70")]
        rows.append([label, arm, *speeds, map_difference(c.get("transfer_difference"), None)])
    return table(spec["head"], rows)


def _map_runs(source: str, root: Path) -> list[dict]:
    """The per-run readings of docs/results/SOURCE/map.json."""
    from .map_report import from_json

    return from_json(root / "docs" / "results" / source / "map.json")[0]


def map_against_table(spec: dict, root: Path = ROOT) -> list[str]:
    """Rows of a map's table against another control (`map_report --against`): the in-domain and
    transfer differences, Holm over every accuracy test of that table as map.md has it."""
    from .map_report import against

    found = {(c["cell"], c["arm"]): c for c in against(_map_runs(spec["source"], root), spec["control"])}
    rows = [
        [label, *(difference_text(found[(cell, arm)][f"{key}_difference"], True) for key in ("in_domain", "transfer"))]
        for label, cell, arm in spec["rows"]
    ]
    return table(spec["head"], rows)


def map_compute_table(spec: dict, root: Path = ROOT) -> list[str]:
    """Per (label, cell, arm) of a map: completions sampled, the teacher's passes and time (and its share
    of each run's training wall time), and wall time, means over seeds; a run without a teacher spent 0."""
    runs = _map_runs(spec["source"], root)
    rows = []
    for label, cell, arm in spec["rows"]:
        mine = [r for r in runs if r["cell"] == cell and r["arm"] == arm]
        mean = {key: sum(r.get(key, 0) for r in mine) / len(mine) for key in ("samples", "teacher_passes", "teacher_s")}
        share = sum(r.get("teacher_s", 0) / r["wall_s"] for r in mine) / len(mine)
        teacher = f"{mean['teacher_s']:.1f} ({share * 100:.1f} %)" if mean["teacher_passes"] else "-"
        wall = sum(r["wall_s"] for r in mine) / len(mine)
        rows.append([label, f"{mean['samples']:,.0f}", f"{mean['teacher_passes']:,.0f}", teacher, f"{wall:.0f}"])
    return table(spec["head"], rows)


KINDS = {
    "conditions": conditions_table,
    "pairs": pairs_table,
    "map": map_table,
    "map-against": map_against_table,
    "map-compute": map_compute_table,
}


def render(name: str, root: Path = ROOT) -> str:
    spec = BLOCKS[name]
    return "\n".join(KINDS[spec["kind"]](spec, root)) + "\n"


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def rewrite(text: str, root: Path = ROOT) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), root) + m.group(4), text)


def stale(root: Path = ROOT) -> list[str]:
    """Pages whose marked blocks differ from what the committed data gives (and unknown block names)."""
    out = []
    for page in pages(root):
        text = page.read_text()
        unknown = [m.group("name") for m in BLOCK.finditer(text) if m.group("name") not in BLOCKS]
        if unknown:
            out.append(f"{page.name}: unknown blocks {', '.join(unknown)}")
        elif rewrite(text, root) != text:
            out.append(page.name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm_grpo.study.doc_numbers", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the marked blocks in place")
    args = parser.parse_args(argv)
    if args.write:
        for page in pages():
            text = page.read_text()
            if BLOCK.search(text):
                page.write_text(rewrite(text))
        return 0
    bad = stale()
    for line in bad:
        print(f"stale: {line} (python -m vlm_grpo.study.doc_numbers --write)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
