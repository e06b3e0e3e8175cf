"""Baseline assessment before training: the study's "measure your base model's format rate first".

Per prompt style, a base model is sampled at the training temperature (what GRPO will see) and
greedily (what a user sees) through `records.sample_records` on a rollout engine (`--engine`),
the path the trainer evaluates with; the rates come from `EvalSummary`, next to the signal
probability 1 - (1 - p)^G, the measured fraction of groups with signal, and the study's decision framework.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..core.statistics import signal_probability, wilson_interval
from ..models import load_for_inference
from ..tasks.styles import STYLES as STYLE_REGISTRY
from ..tasks.styles import get_style
from .decision import recommend
from .map_advice import map_advice
from .records import EvalOptions, EvalSummary, heldout_samples, opened_engine, sample_records

RATES = ("answer_present_rate", "tag_answer_rate", "accuracy", "accuracy_given_answer")


# ---------------------------------------------------------------- input checks
def parse_styles(styles: str | Sequence[str]) -> list[str]:
    """Named prompt styles, checked before any model is loaded (custom needs a template: train only)."""
    known = [s for s in STYLE_REGISTRY.names() if s != "custom"]
    names = [s.strip() for s in styles.split(",")] if isinstance(styles, str) else [str(s) for s in styles]
    names = [s for s in names if s]
    if not names:
        raise ValueError(f"no prompt style given; choose from {', '.join(known)}")
    unknown = [s for s in names if s not in known]
    if unknown:
        raise ValueError(f"unknown prompt style {unknown[0]!r}; choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- baseline assessment
def assess(
    model: str,
    data: str,
    styles: str | Sequence[str] = ("default", "r1v"),
    n: int = 200,
    group_size: int = 8,
    temperature: float = 1.0,
    out: str | Path | None = None,
    options: EvalOptions | None = None,
    prompts_per_step: int = 4,
) -> dict:
    """Per prompt style: sampled and greedy format/accuracy rates, signal odds, the study's advice and
    the measured map's (its cell nearest to the rate, `prompts_per_step` and G), sampled through the
    options' rollout engine (64 completions per batch unless the options say otherwise).

    Writes `out/assessment.json` (one object per style) and `out/records.jsonl` (every completion,
    `decoding` = sampled | greedy) when `out` is given; returns the assessment.
    """
    import torch

    names = parse_styles(styles)
    if n < 1 or group_size < 2 or temperature <= 0:
        raise ValueError(
            f"need n >= 1, num_generations >= 2 and temperature > 0 (got {n}, {group_size}, {temperature})"
        )
    o = options or EvalOptions()
    batch_size = o.batch_size or 64
    task = o.resolved_task()
    samples = heldout_samples(data, n, o.holdout, o.images, task=task, columns=o.columns)
    policy, processor = load_for_inference(model, o.device, o.dtype)
    assessment, all_records = {}, []
    common = dict(batch_size=batch_size, max_new_tokens=o.max_new_tokens, progress=o.progress, task=task)
    with opened_engine(o.engine, policy, processor) as sampler:
        drawn = {}
        for name in names:
            style = get_style(name, task)
            torch.manual_seed(o.seed)  # the same draws for every style, and on every re-run
            sampled = sample_records(
                sampler, style, samples, data, group_size=group_size, temperature=temperature, **common
            )
            drawn[name] = (sampled, sample_records(sampler, style, samples, data, temperature=None, **common))
    for name, (sampled, greedy) in drawn.items():
        for decoding, records in (("sampled", sampled), ("greedy", greedy)):
            for record in records:
                record["decoding"] = decoding
            all_records.extend(records)
        assessment[name] = {
            **style_assessment(sampled, greedy, group_size, task.answer_kind, prompts_per_step),
            "model": model,
            "data": data,
            "task": task.name,
            "present_label": task.present_label,
            "n_prompts": len(samples),
            "group_size": group_size,
            "temperature": temperature,
            "max_new_tokens": o.max_new_tokens,
            "engine": o.engine,
        }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "assessment.json").write_text(json.dumps(assessment, indent=2))
        write_jsonl(out / "records.jsonl", all_records)
    return assessment


def groups_with_signal(records: Sequence[dict]) -> tuple[int, int]:
    """(groups whose rewards are not all equal, groups): GRPO learns only from the former."""
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        groups[record["sample_id"]].append(record["reward"])
    return sum(max(g) != min(g) for g in groups.values()), len(groups)


def style_assessment(
    sampled: Sequence[dict],
    greedy: Sequence[dict],
    group_size: int,
    answer_kind: str = "number",
    prompts_per_step: int = 4,
) -> dict:
    if not sampled or not greedy:
        raise ValueError("no completions were generated: every sample was unusable")
    out = {**EvalSummary.of(sampled).to_dict("", RATES), **EvalSummary.of(greedy).to_dict("greedy_", RATES)}
    p, (lo, hi) = out["answer_present_rate"], out["answer_present_rate_ci"]
    out["signal_probability"] = signal_probability(p, group_size)
    # 1 - (1 - p)^G rises with p, so the interval maps through it bound by bound.
    out["signal_probability_ci"] = [signal_probability(lo, group_size), signal_probability(hi, group_size)]
    with_signal, groups = groups_with_signal(sampled)
    out["signal_measured"] = with_signal / groups
    out["signal_measured_ci"] = list(wilson_interval(with_signal, groups))
    advice = recommend(p, group_size, answer_kind)
    out["recommendation"] = (
        f"{advice['band']} answer-present rate, {advice['viability'].lower()}: "
        f"{advice['recommendation']}. Single-domain: {advice['single_domain']} "
        f"Multi-domain: {advice['multi_domain']} Measured in the lab: {advice['lab']}"
    )
    out["advice"] = {
        k: advice[k] for k in ("band", "viability", "recommendation", "zone", "single_domain", "multi_domain", "lab")
    }
    measured = map_advice(p, prompts_per_step, group_size)
    if measured is not None:
        # The study advises injection below a 50 % rate; the map may have measured otherwise.
        study_injects = not advice["zone"].startswith(">50%")
        out["advice"]["map"] = measured["text"]
        out["advice"]["map_cell"] = measured["cell"]
        paid = measured["injection_paid"]
        out["advice"]["map_differs"] = paid is not None and study_injects != paid
        # The lab line is measured at G 8 x 4 prompts; where the map's nearer cell found injection paid
        # (G 4), the two would read as opposite advice without this.
        out["advice"]["map_overrides_lab"] = bool(paid) and advice["zone"].startswith("<10%")
    return out


def percent(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")


def assessment_table(assessment: dict):
    """A rich table, one column per style so it fits a narrow terminal: rates, signal odds, verdict."""
    from rich.table import Table

    any_style = next(iter(assessment.values()))
    table = Table(
        title=f"Baseline assessment: {any_style['model']} on {any_style['data']}, "
        f"{any_style['n_prompts']} prompts (95 % Wilson intervals)"
    )
    table.add_column("measure")
    for style in assessment:
        table.add_column(style)
    present = any_style["present_label"]
    labels = {
        "answer_present_rate": present,
        "tag_answer_rate": "<answer> tag parses",
        "accuracy": "accuracy",
        "accuracy_given_answer": f"accuracy | {present}",
    }
    for prefix, how in (("", f"sampled, T={any_style['temperature']}"), ("greedy_", "greedy")):
        for key in RATES:
            table.add_row(
                f"{labels[key]} ({how})",
                *(percent(a[prefix + key], a[f"{prefix}{key}_ci"]) for a in assessment.values()),
            )
    G = any_style["group_size"]
    table.add_row(
        f"P(group has signal) = 1-(1-p)^{G}", *(percent(a["signal_probability"]) for a in assessment.values())
    )
    table.add_row(
        "groups with signal (measured)",
        *(percent(a["signal_measured"], a["signal_measured_ci"]) for a in assessment.values()),
    )
    table.add_row(
        "verdict",
        *(
            f"{a['advice']['band']}: {a['advice']['viability']}, {a['advice']['recommendation']}"
            for a in assessment.values()
        ),
    )
    return table


def advice_lines(assessment: dict) -> list[tuple[int, str]]:
    """(indent, text): the study's decision framework per style, for both deployment scenarios."""
    lines = []
    for style, a in assessment.items():
        advice = a["advice"]
        lines += [(0, f"{style}: {advice['zone']}"), (2, f"single-domain: {advice['single_domain']}")]
        if advice["multi_domain"] != advice["single_domain"]:
            lines.append((2, f"multi-domain: {advice['multi_domain']}"))
        if advice.get("lab"):
            lines.append((2, f"measured in the lab: {advice['lab']}"))
        if advice.get("map"):
            differs = " This differs from the study's advice above." if advice["map_differs"] else ""
            if advice.get("map_overrides_lab"):
                differs += " At this setting follow the map, not the lab line above (measured at G 8 x 4 prompts)."
            lines.append((2, f"measured map: {advice['map']}{differs}"))
    return lines
