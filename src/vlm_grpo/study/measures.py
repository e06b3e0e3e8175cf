"""A study's numbers: one run's measures, pooled per condition over seeds, and paired differences.

Per run (`measure`): greedy in-domain and transfer accuracy of the final checkpoint, and, from the
held-out evaluations logged during training (metrics.jsonl), the first step at which in-domain
accuracy reaches the preset's threshold and at which the in-domain answer-present rate reaches
50 % and 90 %. Per condition (`aggregate`): mean and 95 % t-interval over seeds; accuracies and tool-call rates
are proportions and take `core.statistics.rate_interval` (in range; Wilson's where seeds do not
spread); a step
count is summarised by its Kaplan-Meier median over seeds, a seed that never reached it censored at
the budget rather than dropped (`median`, None past the budget), with the lowest and highest seed
(`low`, `high`: '>budget' when one never got there) and `reached`, how many did; the mean over
the seeds that reached it stays in the record, never in a table (it drops the censored seeds). Per pair of
conditions (`paired`): seed-by-seed differences with a t-interval, the paired t-test and
Wilcoxon's signed-rank test (`core.statistics.paired_difference`), and Holm's adjustment over the
study's paired accuracy tests (`core.statistics.holm_family`: the pairs table is one family).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.statistics import (
    holm_family,
    km_median,
    mean_ci,
    paired_difference,
    rate_interval,
    seed_range,
    steps_to_threshold,
)
from ..training.tracking import read_metrics

ACCURACIES = ("in_domain_accuracy", "transfer_accuracy")
# Step measures: (name, the in-domain eval metric, its threshold; None: the preset's accuracy threshold).
STEP_MEASURES = (
    ("steps_to_answer_present_50", "answer_present_rate", 0.5),
    ("steps_to_answer_present_90", "answer_present_rate", 0.9),
    ("steps_to_threshold", "accuracy", None),
)
TOOL_RATES = ("in_domain_tool_call_rate", "transfer_tool_call_rate")
"""Greedy answers that called a tool (studies whose runs have tools)."""
COMPUTE = ("completions_sampled", "demonstrations_trained")
"""What a run spent besides its steps: completions sampled (dynamic sampling draws more than one batch
a step) and demonstrations trained by a supervised term (SFT warm-up, CHORD, HPT's gate)."""
POOLED = (
    *ACCURACIES,
    "generalization_ratio",
    *(name for name, _, _ in STEP_MEASURES),
    "wall_s",
    *COMPUTE,
    *TOOL_RATES,
)
# What a pair of conditions is compared on (a step count only over the seeds where both reached it).
PAIRED = (*ACCURACIES, "steps_to_answer_present_90", "steps_to_threshold")


def wall_seconds(records: Sequence[dict]) -> float:
    """Training wall time over every session: elapsed time restarts at each resume, so sum the segments."""
    total, last = 0.0, None
    for record in records:
        elapsed = record.get("time/elapsed_s")
        if elapsed is None:
            continue
        if last is not None and elapsed < last:
            total += last
        last = elapsed
    return total + (last or 0.0)


def completions_sampled(records: Sequence[dict], rows_per_step: int) -> int:
    """Completions a run sampled: `rows_per_step` at each step that sampled (logged a reward), times the
    batches it drew (dynamic sampling draws more than one); a supervised warm-up step samples none."""
    return sum(rows_per_step * r.get("sampling/batches_drawn", 1) for r in records if "reward/mean" in r)


TEACHER = ("teacher_passes", "teacher_tokens", "teacher_s")
"""A distilling run's teacher compute (`teacher_compute`)."""


def teacher_compute(records: Sequence[dict], rows_per_step: int) -> dict:
    """What a run's teacher (`distill.teacher`) spent, from its metrics: `teacher_passes`, the completions
    it scored (every row of each step whose `distill/coef` was above 0: a step at weight 0 runs no teacher
    pass), `teacher_tokens`, the completion tokens it scored (`distill/teacher_tokens`), and `teacher_s`,
    its time (`time/teacher_s`). Empty for a run without a teacher (no `distill/coef` logged)."""
    steps = [r for r in records if isinstance(r.get("distill/coef"), (int, float))]
    if not steps:
        return {}
    return {
        "teacher_passes": rows_per_step * sum(r["distill/coef"] > 0 for r in steps),
        "teacher_tokens": int(sum(r.get("distill/teacher_tokens") or 0 for r in steps)),
        "teacher_s": round(sum(r.get("time/teacher_s") or 0.0 for r in steps), 1),
    }


def measure(run_dir, eval_sets: Sequence[str], scores: dict, threshold: float, rows_per_step: int = 0) -> dict:
    """One seed's numbers; step counts from metrics.jsonl, which keeps every session's evals
    (`rows_per_step`: completions in one sampled batch, for `completions_sampled`)."""
    in_domain, transfer = eval_sets[0], list(eval_sets[1:])
    records = read_metrics(run_dir / "metrics.jsonl")
    first_transfer = scores[transfer[0]] if transfer else {}
    out = {
        "in_domain_accuracy": scores[in_domain]["accuracy"],
        "transfer_accuracy": first_transfer.get("accuracy"),
        "generalization_ratio": first_transfer.get("generalization_ratio"),
        "wall_s": wall_seconds(records),
        "completions_sampled": completions_sampled(records, rows_per_step),
        "demonstrations_trained": sum(r.get("sft/groups", 0) for r in records if "step" in r),
        "in_domain_tool_call_rate": scores[in_domain].get("tool_call_rate"),
        "transfer_tool_call_rate": first_transfer.get("tool_call_rate"),
    }
    for name, metric, level in STEP_MEASURES:
        key = f"eval/{in_domain}/{metric}"
        logged = [(r["step"], r[key]) for r in records if "step" in r and r.get(key) is not None]
        level = threshold if level is None else level
        out[name] = steps_to_threshold([s for s, _ in logged], [v for _, v in logged], level)
    return out


def _pool(values: list) -> dict:
    """mean_ci over the seeds that have a value; `values` keeps one entry per seed (None: missing)."""
    return {**mean_ci([v for v in values if v is not None]), "values": values}


def aggregate(conditions: Sequence[dict], runs: Sequence, measures: dict[str, dict], eval_n: int = 0) -> list[dict]:
    """Per condition, each measure pooled over seeds (mean and t-interval); proportions over the
    `eval_n` held-out samples of each seed take `rate_interval`."""
    out = []
    for condition in conditions:
        mine = [r for r in runs if r.condition is condition]
        entry = {
            "name": condition["name"],
            "prompt_style": condition.get("prompt_style", "default"),
            "injection": injection_label(condition),
            "seeds": [r.seed for r in mine],
            "runs": [str(r.dir) for r in mine],
        }
        for key in POOLED:
            entry[key] = _pool([measures[r.name].get(key) for r in mine])
        for key in (*ACCURACIES, *TOOL_RATES):
            # Proportions: t-interval over seeds kept in [0, 1], Wilson's where seeds do not spread.
            values = entry[key]["values"]
            entry[key] = {**rate_interval([v for v in values if v is not None], eval_n), "values": values}
        # Seeds that never reach a threshold have no step count: say how many did.
        budget = max((r.cfg.max_steps for r in mine), default=0)
        for name, _, _ in STEP_MEASURES:
            times = entry[name]["values"]
            entry[name]["reached"] = sum(v is not None for v in times)
            if times:
                entry[name]["median"] = km_median(times, budget)
                entry[name]["low"], entry[name]["high"] = seed_range(times, budget)
                entry[name]["budget"] = budget
        if condition.get("reference"):
            entry["reference"] = condition["reference"]
        out.append(entry)
    return out


def injection_label(condition: dict) -> str:
    injection = condition.get("injection") or {}
    mode, schedule = injection.get("mode", "none"), injection.get("schedule", "constant")
    return mode if mode == "none" or schedule == "constant" else f"{mode}/{schedule}"


def paired(entries: Sequence[dict], pairs: Sequence[Sequence[str]]) -> list[dict]:
    """Seed-by-seed differences `treated - control` for each named pair of conditions."""
    by_name = {e["name"]: e for e in entries}
    missing = sorted({n for pair in pairs for n in pair} - set(by_name))
    if missing:
        raise ValueError(f"pairs name unknown conditions: {', '.join(missing)} (known: {', '.join(by_name)})")
    out = []
    for treated, control in pairs:
        a, b = by_name[treated], by_name[control]
        seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
        entry = {"treated": treated, "control": control, "seeds": seeds}
        for key in PAIRED:
            x = dict(zip(a["seeds"], a[key]["values"]))
            y = dict(zip(b["seeds"], b[key]["values"]))
            both = [s for s in seeds if x[s] is not None and y[s] is not None]
            entry[key] = {**paired_difference([x[s] for s in both], [y[s] for s in both]), "n": len(both)}
        out.append(entry)
    holm_family([p[key] for p in out for key in ACCURACIES])
    return out
