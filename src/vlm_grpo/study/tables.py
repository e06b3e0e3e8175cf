"""study.md: the conditions table, the paired differences and the study's own numbers."""

from __future__ import annotations

from .measures import COMPUTE, STEP_MEASURES, TOOL_RATES


def _cell(stat: dict, percent: bool = True, seconds: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "-"
    if stat.get("ci") is None:  # one seed: no interval over seeds
        mean = stat["mean"]
        return f"{mean:.1%} (1 seed)" if percent else f"{mean:.0f}{' s' if seconds else ''} (1 seed)"
    mean, (lo, hi) = stat["mean"], stat["ci"]
    if percent:
        return f"{mean:.1%} ± {(hi - lo) / 2:.1%} [{lo:.1%}, {hi:.1%}]"
    if seconds:
        return f"{mean:.0f} s ± {(hi - lo) / 2:.0f}"
    return f"{mean:.0f} ± {(hi - lo) / 2:.0f} [{lo:.0f}, {hi:.0f}]"


def _steps_cell(stat: dict, runs: int) -> str:
    """'30 [20, >60] (2/3)': the Kaplan-Meier median over seeds (a seed that never got there censored
    at the budget), the lowest and highest seed, and how many of the runs reached it."""
    if not stat.get("reached"):
        return f"not reached (0/{runs})"
    median = f">{stat['budget']}" if stat["median"] is None else f"{stat['median']:.0f}"
    if runs == 1:
        return f"{median} (1/1)"
    return f"{median} [{stat['low']}, {stat['high']}] ({stat['reached']}/{runs})"


def _compute_cell(condition: dict) -> str:
    """'1920 / 168': completions sampled and demonstrations trained by a supervised term, mean per run."""
    means = [(condition.get(key) or {}).get("mean") for key in COMPUTE]
    return "-" if None in means else f"{means[0]:.0f} / {means[1]:.0f}"


def _step_headers(study: dict) -> list[str]:
    levels = {None: f"{study['threshold']:.0%} accuracy"}
    return [
        f"steps to {levels.get(level) or f'{level:.0%} answer-present'} on {study['in_domain']}"
        for _, _, level in STEP_MEASURES
    ]


def _difference(stat: dict, points: bool) -> str:
    """'+1.5 pts [-0.3, +3.3], p 0.080' (points: percentage points); one pair, or pairs that all
    differ alike, have no interval."""
    if stat.get("mean") is None:
        return "-"
    scale, unit = (100, " pts") if points else (1, "")
    mean = stat["mean"] * scale
    if stat.get("ci") is None:
        return f"{mean:+.1f}{unit} (1 pair)"
    lo, hi = (v * scale for v in stat["ci"])
    if lo == hi:  # every pair differed by the same amount: no spread to make an interval from
        return f"{mean:+.1f}{unit} (every pair)"
    p = "" if stat.get("p_t") is None else f", p {stat['p_t']:.3f}"
    count = "" if points else f" (n {stat['n']})"
    return f"{mean:+.1f}{unit} [{lo:+.1f}, {hi:+.1f}]{p}{count}"


def markdown(study: dict) -> str:
    transfer = ", ".join(study["transfer"]) or "-"
    steps = _step_headers(study)
    # Runs with tools: how often the greedy answers called one (mean over seeds).
    tools = any((c.get(TOOL_RATES[0]) or {}).get("mean") is not None for c in study["conditions"])
    lines = [
        f"# Study `{study['preset']}`: {study['model']}, {study['max_steps']} steps, {study['seeds']} seed(s)",
        "",
        study.get("description") or "",
        "",
        f"Greedy accuracy on {study['eval_n']} held-out samples of {study['in_domain']} (in-domain) and "
        f"{transfer} (transfer), mean ± half-width [95 % t-interval over seeds; with one seed, or seeds "
        "that all scored alike, the Wilson interval over the pooled held-out samples]. Steps to a "
        "threshold: first step whose held-out "
        f"{study['in_domain']} evaluation during training (every {study.get('eval_steps') or '?'} steps) "
        "reaches it, as the Kaplan-Meier median over seeds with a seed that never reached it censored at "
        f"the {study['max_steps']}-step budget [lowest, highest seed; >{study['max_steps']}: not reached] "
        "(k/n: how many of the n runs reached it). Sampled / supervised: completions sampled and "
        "demonstrations trained by a supervised term, per run (mean over seeds).",
        "",
        "| condition | prompt | injection | in-domain accuracy | transfer accuracy | transfer / in-domain | "
        + " | ".join(steps)
        + " | wall time | sampled / supervised per run |"
        + (" tool calls, in-domain | tool calls, transfer |" if tools else ""),
        "|---|---|---|---|---|---|" + "---|" * len(steps) + "---|---|" + ("---|---|" if tools else ""),
    ]
    for c in study["conditions"]:
        runs = len(c["seeds"])
        ratio = "-" if c["generalization_ratio"]["mean"] is None else f"{c['generalization_ratio']['mean']:.2f}"
        cells = [_steps_cell(c.get(name) or {}, runs) for name, _, _ in STEP_MEASURES]
        lines.append(
            f"| {c['name']} | {c['prompt_style']} | {c['injection']} | {_cell(c['in_domain_accuracy'])} | "
            f"{_cell(c['transfer_accuracy'])} | {ratio} | "
            + " | ".join(cells)
            + f" | {_cell(c['wall_s'], percent=False, seconds=True)} | {_compute_cell(c)} |"
            + ("".join(f" {_cell(c[key])} |" for key in TOOL_RATES) if tools else "")
        )
    lines += _pairs(study) + _reference(study)
    return "\n".join(lines) + "\n"


def _pairs(study: dict) -> list[str]:
    pairs = study.get("pairs") or []
    if not pairs:
        return []
    lines = [
        "",
        "## Paired differences",
        "",
        "Seed by seed (the same seed draws the same prompts and images under both conditions): mean of "
        "treated minus control, [95 % t-interval], paired t-test p-value; step differences over the "
        "seeds where both reached the threshold (n).",
        "",
        f"| treated - control | seeds | in-domain accuracy | transfer accuracy | {_step_headers(study)[1]} | "
        f"{_step_headers(study)[2]} |",
        "|---|---|---|---|---|---|",
    ]
    for p in pairs:
        lines.append(
            f"| {p['treated']} - {p['control']} | {len(p['seeds'])} | "
            f"{_difference(p['in_domain_accuracy'], True)} | {_difference(p['transfer_accuracy'], True)} | "
            f"{_difference(p['steps_to_answer_present_90'], False)} | {_difference(p['steps_to_threshold'], False)} |"
        )
    return lines


def _reference(study: dict) -> list[str]:
    rows = [c for c in study["conditions"] if c.get("reference")]
    if not rows:
        return []
    lines = [
        "",
        "## The study's own numbers",
        "",
        "Shringarpure (2025), *Breaking the Cold Start Barrier*: Qwen2-VL-2B on CLEVR (in-domain) and "
        "SuperCLEVR (transfer), one run per condition, no intervals. Compare directions (injection "
        "speeds up the weak-prompt start but costs transfer; under r1v the gap closes), not absolute values.",
        "",
        "| condition | base format rate | CLEVR | SuperCLEVR | steps to 90 % | steps trained | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        ref = c["reference"]
        fmt = [
            f"{v:.0%}" if isinstance(v, float) else str(v)
            for v in (ref.get("in_domain_accuracy", "-"), ref.get("transfer_accuracy", "-"))
        ]
        lines.append(
            f"| {c['name']} | {ref.get('baseline', '-')} | {fmt[0]} | {fmt[1]} | "
            f"{ref.get('steps_to_threshold', '-')} | {ref.get('steps_trained', '-')} | {ref.get('wall', '-')} |"
        )
    return lines
