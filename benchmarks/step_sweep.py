#!/usr/bin/env python
"""How a GRPO step's time grows with G and with completion length, ours against TRL.

At one image size (64 image tokens per prompt unless ``--size``), 4 prompts per step, every
completion exactly its length long: G = 4, 8, 16 at 32 new tokens, and 32, 64, 128 new tokens at
G = 8 (G 8 x 32 is shared). Each point is one ``step_throughput.py`` measurement of ours and TRL
(same children, settings, interference checks and alternation), without the log-prob pass and the
num_iterations=4 run. Writes its block of benchmarks/RESULTS.md; the last line printed is JSON:
``{"G=4,L=32": ratio, ...}`` with ratio = our completions per second / TRL's.

    python benchmarks/step_sweep.py            # 2 repeats x (1 warm-up + 4 timed steps) per point
    python benchmarks/step_sweep.py --quick    # 1 repeat x (1 warm-up + 2 timed steps), no waiting, writes nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import step_throughput  # noqa: E402  (the sibling script: its children and report helpers)

POINTS = ((4, 32), (8, 32), (16, 32), (8, 64), (8, 128))  # (G, new tokens)
BEGIN = "<!-- BEGIN GENERATED: benchmarks/step_sweep.py -->"


def measure_point(a: argparse.Namespace, group: int, length: int) -> dict:
    """Ours and TRL at one (G, length): the size's entry of step_throughput's report."""
    argv = [
        *("--sizes", str(a.size), "--group-size", str(group), "--new-tokens", str(length)),
        *("--repeats", str(a.repeats), "--warmup", str(a.warmup), "--steps", str(a.steps)),
        *("--threads", str(a.threads), "--model-size", a.model_size, "--workdir", a.workdir),
        *("--no-ours4", "--no-logprob", "--results", "none"),
        *(("--quick",) if a.quick else ()),
    ]
    report = step_throughput.main(argv)
    return {"report": report, "entry": report["sizes"][str(a.size)]}


def render(points: dict, a: argparse.Namespace, started: str, minutes: float, machine: dict) -> str:
    s = next(iter(points.values()))["report"]["settings"]  # what step_throughput ran (--quick overrides)
    lines = [
        f"Command: `python benchmarks/step_sweep.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`",
        "",
        f"Run: {started}, {minutes:.1f} min on {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, "
        f"transformers {machine['transformers']}, trl {machine['trl']}. {a.size} image tokens per prompt, "
        f"4 prompts per step, every completion exactly its length, fp32, torch.set_num_threads({a.threads}); "
        f"{s['repeats']} repeat(s) x ({s['warmup']} warm-up + {s['steps']} timed steps) per framework and point.",
        "",
        "| G | new tokens | completions/step | ours s/step | TRL s/step | ours completions/s | TRL completions/s "
        "| ours/TRL | ours sampling s (share) | TRL sampling s (share) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (group, length), point in points.items():
        e = point["entry"]
        ours, trl = e["ours"], e["trl"]
        mine, theirs = ours["phases_median_s"]["sampling"], trl["phases_median_s"]["generate"]
        lines.append(
            f"| {group} | {length} | {group * step_throughput.PROMPTS_PER_STEP} | {ours['median_step_s']:.3f} | "
            f"{trl['median_step_s']:.3f} | {ours['completions_per_s']:.1f} | {trl['completions_per_s']:.1f} | "
            f"**{e['ratio_vs_trl']:.2f}x** | {mine:.3f} ({100 * mine / ours['median_step_s']:.0f} %) | "
            f"{theirs:.3f} ({100 * theirs / trl['median_step_s']:.0f} %) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, choices=step_throughput.IMAGE_TOKENS, help="image tokens (64)")
    p.add_argument("--repeats", type=int, default=2, help="A B alternations per point")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of every child")
    p.add_argument("--steps", type=int, default=4, help="timed steps per child")
    p.add_argument("--threads", type=int, default=2, help="torch threads in every child")
    p.add_argument("--model-size", default="small", choices=("nano", "small"), help="vlm_grpo.tiny size")
    p.add_argument("--quick", action="store_true", help="1 repeat x (1 warm-up + 2 timed steps), writes nothing")
    p.add_argument("--points", default=None, help="G:length pairs, comma separated (default: the five points)")
    p.add_argument("--workdir", default=None, help="models, data and logs (default: a fresh temporary folder)")
    p.add_argument("--results", default=None, help="markdown file (default benchmarks/RESULTS.md; 'none': nothing)")
    a = p.parse_args(argv)
    points = POINTS if a.points is None else tuple(tuple(int(x) for x in pt.split(":")) for pt in a.points.split(","))
    if any(len(point) != 2 or point[0] < 2 or point[1] < 1 for point in points):
        p.error("--points: G:length pairs with G >= 2 (TRL needs two completions per prompt) and length >= 1")
    a.workdir = str(Path(a.workdir or tempfile.mkdtemp(prefix="vlm_grpo_sweep_")).resolve())
    started, t0 = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
    measured = {(group, length): measure_point(a, group, length) for group, length in points}
    machine = next(iter(measured.values()))["report"]["machine"]
    block = render(measured, a, started, (time.perf_counter() - t0) / 60, machine)
    print(block)
    results = a.results or ("none" if a.quick else str(HERE / "RESULTS.md"))
    if results != "none":
        step_throughput.write_block(Path(results), BEGIN, block)
    final = {f"G={g},L={n}": round(point["entry"]["ratio_vs_trl"], 3) for (g, n), point in measured.items()}
    print(json.dumps(final), flush=True)
    return final


if __name__ == "__main__":
    main()
