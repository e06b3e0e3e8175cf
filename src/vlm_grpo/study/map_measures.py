"""The injection map's numbers: one run's readings, then each cell's arms against no injection.

A map is a study whose conditions carry a `cell` (the setting: base, prompts per step, group
size, learning rate) and an `arm` (none, random, rate); see `presets/map.yaml`. Per run
(`read_run`): steps to 90 % answer-present and to 70 % accuracy, on the policy's sampled rows
(one-step resolution, `steps.sampled_crossing`) and on the held-out grid (`eval_steps`
resolution), censored at the budget (None); final greedy accuracies and each held-out scene's
correctness, so the scene draw can enter the intervals (`scene_inclusive`); training wall time,
completions sampled (`samples`) and, in a run with a teacher, the teacher's passes, tokens and time
(`measures.teacher_compute`). Per cell and treated arm (`compare`): the speed-up control / arm
(`steps.speedup`), the paired accuracy differences, and wall time, against the cell's `none` arm or
another `control`. `holm_adjust` adjusts one table's p-values, both columns as one family.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from ..core.statistics import holm_family, km_median, paired_difference, seed_range, speedup, t_quantile
from ..training.tracking import read_metrics
from .measures import TEACHER, completions_sampled, teacher_compute, wall_seconds
from .runs import config_value
from .steps import grid_crossing, sampled_crossing, window_for

PRESENT, ACCURACY = 0.9, 0.7  # the study's format threshold and the lab presets' accuracy threshold
# (name, where, metric, level): the four step readings of a run.
STEP_READINGS = (
    ("sampled_present_90", "sampled", "answer_present_rate", PRESENT),
    ("sampled_accuracy_70", "sampled", "accuracy", ACCURACY),
    ("heldout_present_90", "heldout", "answer_present_rate", PRESENT),
    ("heldout_accuracy_70", "heldout", "accuracy", ACCURACY),
)


def _series(records: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if "step" in r and isinstance(r.get(key), (int, float))]
    return [s for s, _ in pairs], [float(v) for _, v in pairs]


def step_readings(records: Sequence[dict], in_domain: str, rows_per_step: int) -> dict:
    """The four step readings of one run from its metrics records (None: never reached)."""
    window = window_for(rows_per_step)
    out = {}
    for name, where, metric, level in STEP_READINGS:
        if where == "sampled":
            out[name] = sampled_crossing(*_series(records, f"rollout/{metric}"), level, window)
        else:
            out[name] = grid_crossing(*_series(records, f"eval/{in_domain}/{metric}"), level)
    return {**out, "window": window}


def scene_bits(records_path: Path, dataset: str) -> str:
    """Each held-out scene's greedy correctness as '0'/'1', in sample-id order."""
    rows = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
    mine = sorted((str(r["sample_id"]), bool(r["correct"])) for r in rows if r["dataset"] == dataset)
    return "".join("1" if c else "0" for _, c in mine)


def read_run(run_dir: Path, condition: Mapping, seed: int) -> dict:
    """One run of a map: its setting, step readings, accuracies, scenes, wall time and samples."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    records = read_metrics(run_dir / "metrics.jsonl")
    in_domain, transfer = cfg["data"]["eval"][0], cfg["data"]["eval"][1]
    rows = int(cfg["prompts_per_step"]) * int(cfg["num_generations"])
    out = {
        "cell": condition["cell"],
        "arm": condition["arm"],
        "seed": seed,
        "model": cfg["model"],
        "prompts_per_step": int(cfg["prompts_per_step"]),
        "num_generations": int(cfg["num_generations"]),
        "learning_rate": float(cfg["learning_rate"]),
        "budget": int(cfg["max_steps"]),
        "grid": int(config_value(cfg, "data.eval_steps")),
        "samples": completions_sampled(records, rows),
        "wall_s": round(wall_seconds(records), 1),
        **teacher_compute(records, rows),
        **step_readings(records, in_domain, rows),
    }
    final = run_dir / "final_eval"
    if (final / "records.jsonl").is_file():
        out["in_domain_scenes"] = scene_bits(final / "records.jsonl", in_domain)
        out["transfer_scenes"] = scene_bits(final / "records.jsonl", transfer)
        out["in_domain_accuracy"] = out["in_domain_scenes"].count("1") / len(out["in_domain_scenes"])
        out["transfer_accuracy"] = out["transfer_scenes"].count("1") / len(out["transfer_scenes"])
    return out


def scene_inclusive(treated: Sequence[str], control: Sequence[str], confidence: float = 0.95) -> dict:
    """Paired accuracy difference over seeds whose interval also counts the draw of held-out scenes.

    `treated[s]`, `control[s]`: seed s's per-scene correctness ('0'/'1', the same scenes in the same
    order under both arms and every seed). Seeds vary the training; the scenes are one draw of many,
    shared by every seed, so a t-interval over seeds leaves their sampling out. The variance of the
    mean difference adds the two parts: var over seeds / n, plus var over scenes of the seed-averaged
    per-scene difference / scenes; the interval uses the t quantile with n - 1 degrees of freedom."""
    if len(treated) != len(control) or not treated:
        raise ValueError("need the same seeds, at least one, under both arms")
    scenes = len(treated[0])
    if any(len(x) != scenes for x in (*treated, *control)):
        raise ValueError("every seed and arm must score the same scenes")
    n = len(treated)
    per_scene = [sum(int(t[j]) - int(c[j]) for t, c in zip(treated, control)) / n for j in range(scenes)]
    per_seed = [(t.count("1") - c.count("1")) / scenes for t, c in zip(treated, control)]
    mean = sum(per_seed) / n
    var_scenes = sum((d - mean) ** 2 for d in per_scene) / (scenes - 1) / scenes if scenes > 1 else 0.0
    var_seeds = sum((d - mean) ** 2 for d in per_seed) / (n - 1) / n if n > 1 else 0.0
    half = (t_quantile(n - 1, confidence) if n > 1 else 1.959964) * math.sqrt(var_seeds + var_scenes)
    return {"mean": mean, "ci": [mean - half, mean + half], "n": n, "scenes": scenes}


def _by_seed(runs: Sequence[dict], cell: str, arm: str) -> dict[int, dict]:
    return {r["seed"]: r for r in runs if r["cell"] == cell and r["arm"] == arm}


def arm_summary(runs: Sequence[dict]) -> dict:
    """One arm of one cell: KM median and seed range of each step reading; mean wall time, completions
    sampled and, where a run had a teacher, its compute (`measures.TEACHER`; a run without one spent 0)."""
    budget = runs[0]["budget"]
    out = {"seeds": len(runs), "budget": budget, "grid": runs[0]["grid"], "window": runs[0]["window"]}
    for name, *_ in STEP_READINGS:
        times = [r[name] for r in runs]
        out[name] = {"median": km_median(times, budget), "range": seed_range(times, budget), "values": times}
    out["wall_s"] = sum(r["wall_s"] for r in runs) / len(runs)
    out["samples"] = round(sum(r["samples"] for r in runs) / len(runs))
    if any(key in r for r in runs for key in TEACHER):  # a run without a teacher spent none
        out |= {key: sum(r.get(key, 0) for r in runs) / len(runs) for key in TEACHER}
    for key in ("in_domain_accuracy", "transfer_accuracy"):
        values = [r[key] for r in runs if key in r]
        out[key] = sum(values) / len(values) if values else None
    return out


def compare(runs: Sequence[dict], cell: str, arm: str, control: str = "none") -> dict:
    """A treated arm of a cell against its `control` arm (plain GRPO, `none`, unless named), seed by seed
    (the seeds both have). A named control other than `none` is kept in the result (`control`)."""
    treated, base = _by_seed(runs, cell, arm), _by_seed(runs, cell, control)
    seeds = sorted(set(treated) & set(base))
    if not seeds:
        raise ValueError(f"cell {cell!r}: no seed ran both {arm!r} and {control!r}")
    budget = treated[seeds[0]]["budget"]
    out = {"cell": cell, "arm": arm, "seeds": seeds} | ({"control": control} if control != "none" else {})
    for name, where, *_ in STEP_READINGS:
        grid = treated[seeds[0]]["grid"] if where == "heldout" else 1  # what the reading can resolve
        times = [base[s][name] for s in seeds], [treated[s][name] for s in seeds]
        out[f"speedup_{name}"] = speedup(*times, budget, grid)
    for key in ("in_domain", "transfer"):
        if all(f"{key}_scenes" in r for s in seeds for r in (treated[s], base[s])):
            a, b = [treated[s][f"{key}_accuracy"] for s in seeds], [base[s][f"{key}_accuracy"] for s in seeds]
            out[f"{key}_difference"] = paired_difference(a, b)
            out[f"{key}_with_scenes"] = scene_inclusive(
                [treated[s][f"{key}_scenes"] for s in seeds], [base[s][f"{key}_scenes"] for s in seeds]
            )
    out["wall_ratio"] = sum(treated[s]["wall_s"] for s in seeds) / sum(base[s]["wall_s"] for s in seeds)
    return out


def holm_adjust(comparisons: Sequence[dict]) -> None:
    """Add `p_holm` to every accuracy difference of one table's comparisons: in-domain and transfer
    are one family (`core.statistics.holm_family`)."""
    holm_family([c.get(key) for c in comparisons for key in ("in_domain_difference", "transfer_difference")])
