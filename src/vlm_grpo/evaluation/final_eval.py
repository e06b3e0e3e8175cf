"""Greedy evaluation of checkpoints after training (`vlm-grpo eval`, the study's final table).

Every checkpoint is scored on every data set (the first in-domain, the rest transfer) through
`records.sample_records` on a rollout engine (`--engine`), both scorings, with the generalization
ratio of each transfer set to the in-domain set: near 1 is robust learning, far below 1 is domain
overfitting (the study's step 5).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..models import check_model_name, load_for_inference
from ..tasks.styles import PromptStyle, get_style
from ..tools import get_tools
from .assess import parse_styles, percent, write_jsonl
from .records import EvalOptions, EvalSummary, heldout_samples, opened_engine, sample_records

ENTRY_RATES = ("accuracy", "strict_accuracy", "answer_present_rate", "style_format_rate")


def evaluate_models(
    models: Sequence[str],
    data: Sequence[str],
    style: str | PromptStyle = "default",
    n: int = 200,
    out: str | Path | None = None,
    temperature: float | None = None,
    train: str | None = None,
    options: EvalOptions | None = None,
) -> dict:
    """Every checkpoint on every data set (the first in-domain, the rest transfer), greedy by default,
    sampled through the options' rollout engine (one engine per checkpoint); `train` names the
    training set, whose held-out rows an in-domain lab set then comes from.

    Writes `out/records.jsonl` (one line per completion) and `out/summary.json` when `out` is given.
    """
    import torch
    from tqdm.auto import tqdm

    o = options or EvalOptions()
    task = o.resolved_task()
    if isinstance(style, str):
        style = get_style(parse_styles([style])[0], task)
    if o.tools:
        style = style.with_tools(get_tools(o.tools))
    if not models or not data:
        raise ValueError("give at least one --model and one --data")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (leave it out for greedy decoding)")
    for name in models:
        check_model_name(name)
    sets = {spec: heldout_samples(spec, n, o.holdout, o.images, train, task, o.columns) for spec in dict.fromkeys(data)}
    results, all_records = {}, []
    decoding = dict(temperature=temperature, max_new_tokens=o.max_new_tokens, progress=o.progress, task=task)
    for name in tqdm(models, desc="checkpoints", disable=not o.progress or len(models) < 2):
        policy, processor = load_for_inference(name, o.device, o.dtype)
        results[name], drawn = {}, {}
        with opened_engine(o.engine, policy, processor, tools=o.tools, max_turns=o.max_turns) as sampler:
            for spec, samples in sets.items():
                torch.manual_seed(o.seed)
                drawn[spec] = sample_records(sampler, style, samples, spec, batch_size=o.batch_size or 32, **decoding)
        for spec, records in drawn.items():
            for record in records:
                record["checkpoint"] = name
            all_records.extend(records)
            results[name][spec] = _eval_entry(records)
        del policy
        _add_ratios(results[name], list(sets))
    summary = {
        "task": task.name,
        "present_label": task.present_label,
        "style": style.name,
        "engine": o.engine,
        "decoding": "greedy" if temperature is None else "sampled",
        "temperature": temperature,
        "n": n,
        "in_domain": data[0],
        "transfer": list(sets)[1:],
        "results": results,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "records.jsonl", all_records)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _eval_entry(records: Sequence[dict]) -> dict:
    entry = {"n": len(records), **EvalSummary.of(records).to_dict("", ENTRY_RATES)}
    if records and "tool_calls" in records[0]:  # evaluated with tools: how often an answer called one
        entry["tool_call_rate"] = sum(r["tool_calls"] > 0 for r in records) / len(records)
    return entry


def _add_ratios(per_set: dict, specs: list[str]) -> None:
    """Transfer / in-domain accuracy: near 1 is robust learning, far below 1 is domain overfitting."""
    in_domain = per_set[specs[0]]
    in_domain["role"] = "in-domain"
    for spec in specs[1:]:
        entry, base = per_set[spec], in_domain["accuracy"]
        entry["role"] = "transfer"
        entry["generalization_ratio"] = entry["accuracy"] / base if base and entry["accuracy"] is not None else None


def eval_table(summary: dict):
    from rich.table import Table

    table = Table(title=f"Evaluation ({summary['decoding']}, prompt style {summary['style']}, 95 % Wilson intervals)")
    for column in (
        "checkpoint",
        "data set",
        "n",
        "accuracy",
        "strict accuracy",
        summary.get("present_label", "answer present"),
        "transfer / in-domain",
    ):
        table.add_column(column, overflow="fold")  # a checkpoint path cut to "/tmp/ru…" identifies nothing
    for name, per_set in summary["results"].items():
        for spec, e in per_set.items():
            ratio = e.get("generalization_ratio")
            table.add_row(
                name,
                f"{spec} ({e['role']})",
                str(e["n"]),
                percent(e["accuracy"], e["accuracy_ci"]),
                percent(e["strict_accuracy"], e["strict_accuracy_ci"]),
                percent(e["answer_present_rate"], e["answer_present_rate_ci"]),
                "-" if ratio is None else f"{ratio:.2f}",
            )
    return table
