"""A study's conditions at equal sampling: each treated run's held-out accuracy at its last
evaluation during training before it had sampled more completions than the control run of the
same seed sampled in all, against the control's last evaluation, seed by seed.

    python scripts/equal_compute.py runs/study-remedies --treated dynamic-sampling --control none

Completions sampled per step are prompts_per_step x num_generations x the batches drawn that step
(dynamic sampling draws more than one); a supervised step samples none. Prints one JSON line per
held-out set: both conditions' accuracies per seed, the step each was read at, and the paired
difference (mean, 95 % t-interval, paired t-test p).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from vlm_grpo.core.statistics import paired_difference
from vlm_grpo.training.tracking import read_metrics


def sampled_by_step(run: Path) -> dict[int, int]:
    """Completions sampled up to and including each step."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    rows = cfg.get("prompts_per_step", 4) * cfg.get("num_generations", 8)
    total, out = 0, {0: 0}
    for record in read_metrics(run / "metrics.jsonl"):
        if "reward/mean" in record:
            total += rows * record.get("sampling/batches_drawn", 1)
        out[record["step"]] = total
    return out


def accuracy_at(run: Path, key: str, budget: float) -> tuple[int, float]:
    """(step, accuracy) of the last evaluation whose step had sampled at most `budget` completions."""
    sampled = sampled_by_step(run)
    logged = [(r["step"], r[key]) for r in read_metrics(run / "metrics.jsonl") if r.get(key) is not None]
    within = [(step, value) for step, value in logged if sampled[step] <= budget]
    return within[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="The study's output folder (with study.json and runs/).")
    parser.add_argument("--treated", default="dynamic-sampling")
    parser.add_argument("--control", default="none")
    args = parser.parse_args()
    study = json.loads((args.study / "study.json").read_text())
    seeds = {c["name"]: c["seeds"] for c in study["conditions"]}
    both = sorted(set(seeds[args.treated]) & set(seeds[args.control]))
    for name in [study["in_domain"], *study["transfer"]]:
        key = f"eval/{name}/accuracy"
        treated, control = [], []
        for seed in both:
            run_c = args.study / "runs" / f"{args.control}-seed{seed}"
            budget = sampled_by_step(run_c)[max(sampled_by_step(run_c))]
            control.append(accuracy_at(run_c, key, budget))
            treated.append(accuracy_at(args.study / "runs" / f"{args.treated}-seed{seed}", key, budget))
        diff = paired_difference([v for _, v in treated], [v for _, v in control])
        print(
            json.dumps(
                {
                    "set": name,
                    "seeds": both,
                    args.treated: treated,
                    args.control: control,
                    "difference": {k: diff[k] for k in ("mean", "ci", "p_t")},
                }
            )
        )


if __name__ == "__main__":
    main()
