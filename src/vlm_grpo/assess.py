"""Baseline assessment before training, and greedy evaluation of checkpoints after it.

Both go through `evaluate.generate_records`, the path the trainer evaluates with, so a base
model's format rate, a run's held-out accuracy and a study's final table come from one scorer.

- `assess`: the study's "measure your base model's format rate first" step, per prompt style,
  sampled at the training temperature (what GRPO will see) and greedily (what a user sees), with
  the signal probability 1 - (1 - p)^G next to the measured fraction of groups with signal.
- `evaluate_models`: checkpoints x data sets, both scorings, and the generalization ratio of each
  transfer set to the first (in-domain) set.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from .evaluate import generate_records, heldout_samples, summarize
from .prompts import PromptStyle, get_style
from .rewards import parse_strict
from .stats import recommend, signal_probability, wilson_interval

STYLES = ("default", "r1v")
RATES = ("format_rate", "strict_format_rate", "accuracy", "accuracy_given_format")


# ---------------------------------------------------------------- input checks
def parse_styles(styles: str | Sequence[str]) -> list[str]:
    """Named prompt styles, checked before any model is loaded (custom needs a template: train only)."""
    names = [s.strip() for s in styles.split(",")] if isinstance(styles, str) else [str(s) for s in styles]
    names = [s for s in names if s]
    if not names:
        raise ValueError(f"no prompt style given; choose from {', '.join(STYLES)}")
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown prompt style {unknown[0]!r}; choose from {', '.join(STYLES)}")
    return list(dict.fromkeys(names))


def check_model(name: str) -> None:
    """Fail fast on a name that is neither registered, a saved folder, nor a hub id."""
    from .models import registered_models

    path = Path(name)
    if name in registered_models() or (path / "config.json").is_file():
        return
    if path.exists():
        raise ValueError(f"model folder {path} has no config.json: it is not a saved model")
    try:
        from .lab import models as lab_models
    except ImportError:
        lab_models = None
    if lab_models is not None and name in lab_models.BASES:
        raise ValueError(f"lab model {name!r} is not built yet: no saved model under {lab_models.path_of(name)} "
                         "(the counting lab pre-trains it: python -m vlm_grpo.lab.pretrain)")
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise ValueError(f"unknown model {name!r}: not a registered name ({', '.join(registered_models())}), "
                         "a saved model folder, or a hub id (org/name)")


def load_policy(name: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """Model (eval mode) and processor; loading failures become one-line ValueErrors."""
    from .models import load_model_and_processor, pick_device, pick_dtype

    check_model(name)
    dev = pick_device(device)
    try:
        model, processor = load_model_and_processor(name, dev, pick_dtype(dtype, dev), trust_remote_code)
    except (OSError, ValueError) as exc:  # hub ids offline, bad folders, unsupported architectures
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load model {name!r}: {first}") from exc
    return model.eval(), processor


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- baseline assessment
def assess(
    model: str,
    data: str,
    styles: str | Sequence[str] = STYLES,
    n: int = 200,
    group_size: int = 8,
    temperature: float = 1.0,
    out: str | Path | None = None,
    images: str | None = None,
    holdout: int = 1000,
    batch_size: int = 64,
    max_new_tokens: int = 50,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Per prompt style: sampled and greedy format/accuracy rates, signal odds and the study's advice.

    Writes `out/assessment.json` (one object per style) and `out/records.jsonl` (every completion,
    `decoding` = sampled | greedy) when `out` is given; returns the assessment.
    """
    import torch

    names = parse_styles(styles)
    if n < 1 or group_size < 2 or temperature <= 0:
        raise ValueError(f"need n >= 1, num_generations >= 2 and temperature > 0 "
                         f"(got {n}, {group_size}, {temperature})")
    samples = heldout_samples(data, n, holdout, images)
    policy, processor = load_policy(model, device, dtype)
    assessment, all_records = {}, []
    for name in names:
        style = get_style(name)
        torch.manual_seed(seed)  # the same draws for every style, and on every re-run
        common = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, progress=progress)
        sampled = generate_records(policy, processor, style, samples, data, group_size=group_size,
                                   temperature=temperature, **common)
        greedy = generate_records(policy, processor, style, samples, data, group_size=1, temperature=None, **common)
        for decoding, records in (("sampled", sampled), ("greedy", greedy)):
            for record in records:
                record.update(decoding=decoding, strict_parsed=parse_strict(record["completion"]))
            all_records.extend(records)
        assessment[name] = {**style_assessment(sampled, greedy, group_size),
                            "model": model, "data": data, "n_prompts": len(samples), "group_size": group_size,
                            "temperature": temperature, "max_new_tokens": max_new_tokens}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "assessment.json").write_text(json.dumps(assessment, indent=2))
        _write_jsonl(out / "records.jsonl", all_records)
    return assessment


def _four_rates(records: Sequence[dict], prefix: str = "") -> dict:
    """Number present, strict tags, accuracy and accuracy among answers holding a number, with CIs."""
    total = len(records)
    present = sum(bool(r["number_present"]) for r in records)
    strict = sum(r["strict_parsed"] is not None for r in records)
    correct = sum(bool(r["correct"]) for r in records)
    counts = {"format_rate": (present, total), "strict_format_rate": (strict, total),
              "accuracy": (correct, total), "accuracy_given_format": (correct, present)}
    out = {}
    for name, (hits, of) in counts.items():
        out[prefix + name] = hits / of if of else None
        out[f"{prefix}{name}_ci"] = list(wilson_interval(hits, of))
    return out


def groups_with_signal(records: Sequence[dict]) -> tuple[int, int]:
    """(groups whose rewards are not all equal, groups): GRPO learns only from the former."""
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        groups[record["sample_id"]].append(record["reward"])
    return sum(max(g) != min(g) for g in groups.values()), len(groups)


def style_assessment(sampled: Sequence[dict], greedy: Sequence[dict], group_size: int) -> dict:
    if not sampled or not greedy:
        raise ValueError("no completions were generated: every sample was unusable")
    out = {**_four_rates(sampled), **_four_rates(greedy, "greedy_")}
    p, (lo, hi) = out["format_rate"], out["format_rate_ci"]
    out["signal_probability"] = signal_probability(p, group_size)
    # 1 - (1 - p)^G rises with p, so the interval maps through it bound by bound.
    out["signal_probability_ci"] = [signal_probability(lo, group_size), signal_probability(hi, group_size)]
    with_signal, groups = groups_with_signal(sampled)
    out["signal_measured"] = with_signal / groups
    out["signal_measured_ci"] = list(wilson_interval(with_signal, groups))
    advice = recommend(p, group_size)
    out["recommendation"] = (f"{advice['band']} format rate, {advice['viability'].lower()}: "
                             f"{advice['recommendation']}. Single-domain: {advice['single_domain']} "
                             f"Multi-domain: {advice['multi_domain']}")
    out["advice"] = {k: advice[k] for k in ("band", "viability", "recommendation", "zone",
                                             "single_domain", "multi_domain")}
    return out


def _pct(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")


def assessment_table(assessment: dict):
    """A rich table, one column per style so it fits a narrow terminal: rates, signal odds, verdict."""
    from rich.table import Table

    any_style = next(iter(assessment.values()))
    table = Table(title=f"Baseline assessment: {any_style['model']} on {any_style['data']}, "
                        f"{any_style['n_prompts']} prompts (95 % Wilson intervals)")
    table.add_column("measure")
    for style in assessment:
        table.add_column(style)
    labels = {"format_rate": "number present", "strict_format_rate": "<answer> tag parses",
              "accuracy": "accuracy", "accuracy_given_format": "accuracy | number present"}
    for prefix, how in (("", f"sampled, T={any_style['temperature']}"), ("greedy_", "greedy")):
        for key in RATES:
            table.add_row(f"{labels[key]} ({how})", *(_pct(a[prefix + key], a[f"{prefix}{key}_ci"]) for a in assessment.values()))
    G = any_style["group_size"]
    table.add_row(f"P(group has signal) = 1-(1-p)^{G}", *(_pct(a["signal_probability"]) for a in assessment.values()))
    table.add_row("groups with signal (measured)", *(_pct(a["signal_measured"], a["signal_measured_ci"]) for a in assessment.values()))
    table.add_row("verdict", *(f"{a['advice']['band']}: {a['advice']['viability']}, {a['advice']['recommendation']}"
                               for a in assessment.values()))
    return table


def advice_lines(assessment: dict) -> list[tuple[int, str]]:
    """(indent, text): the study's decision framework per style, for both deployment scenarios."""
    lines = []
    for style, a in assessment.items():
        advice = a["advice"]
        lines += [(0, f"{style}: {advice['zone']}"), (2, f"single-domain: {advice['single_domain']}")]
        if advice["multi_domain"] != advice["single_domain"]:
            lines.append((2, f"multi-domain: {advice['multi_domain']}"))
    return lines


# ---------------------------------------------------------------- checkpoint evaluation
def evaluate_models(
    models: Sequence[str],
    data: Sequence[str],
    style: str | PromptStyle = "default",
    n: int = 200,
    out: str | Path | None = None,
    temperature: float | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 50,
    holdout: int = 1000,
    images: str | None = None,
    train: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Every checkpoint on every data set (the first in-domain, the rest transfer), greedy by default.

    Writes `out/records.jsonl` (one line per completion) and `out/summary.json` when `out` is given.
    """
    import torch
    from tqdm.auto import tqdm

    if isinstance(style, str):
        style = get_style(parse_styles([style])[0])
    if not models or not data:
        raise ValueError("give at least one --model and one --data")
    if temperature is not None and temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (leave it out for greedy decoding)")
    for name in models:
        check_model(name)
    sets = {spec: heldout_samples(spec, n, holdout, images, train) for spec in dict.fromkeys(data)}
    results, all_records = {}, []
    for name in tqdm(models, desc="checkpoints", disable=not progress or len(models) < 2):
        policy, processor = load_policy(name, device, dtype)
        results[name] = {}
        for spec, samples in sets.items():
            torch.manual_seed(seed)
            records = generate_records(policy, processor, style, samples, spec, batch_size=batch_size,
                                       temperature=temperature, max_new_tokens=max_new_tokens, progress=progress)
            for record in records:
                record.update(checkpoint=name, strict_parsed=parse_strict(record["completion"]))
            all_records.extend(records)
            results[name][spec] = _eval_entry(records)
        del policy
        _add_ratios(results[name], list(sets))
    summary = {"style": style.name, "decoding": "greedy" if temperature is None else "sampled",
               "temperature": temperature, "n": n, "in_domain": data[0], "transfer": list(sets)[1:],
               "results": results}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        _write_jsonl(out / "records.jsonl", all_records)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _eval_entry(records: Sequence[dict]) -> dict:
    summary = summarize(records)
    entry = {"n": summary["n"]}
    for key in ("accuracy", "strict_accuracy", "number_present_rate", "format_rate"):
        entry[key] = summary[key] if summary["n"] else None  # NaN is not JSON
        entry[f"{key}_ci"] = summary[f"{key}_ci"]
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
    for column in ("checkpoint", "data set", "n", "accuracy", "strict accuracy", "number present", "transfer / in-domain"):
        table.add_column(column, overflow="fold")  # a checkpoint path cut to "/tmp/ru…" identifies nothing
    for name, per_set in summary["results"].items():
        for spec, e in per_set.items():
            ratio = e.get("generalization_ratio")
            table.add_row(name, f"{spec} ({e['role']})", str(e["n"]), _pct(e["accuracy"], e["accuracy_ci"]),
                          _pct(e["strict_accuracy"], e["strict_accuracy_ci"]),
                          _pct(e["number_present_rate"], e["number_present_rate_ci"]),
                          "-" if ratio is None else f"{ratio:.2f}")
    return table
