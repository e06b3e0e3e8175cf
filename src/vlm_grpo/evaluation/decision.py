"""The study's decision framework: what to do given a base model's answer-present (format) rate.

Two views of the same advice, both from the study: its thresholds table (bands 0-5 %, 5-15 %,
15-30 %, > 30 %) and its flow chart (< 10 %, 10-50 %, > 50 %), each with actionable settings;
beside each flow-chart zone, what the counting lab measured there with five seeds (docs/results.md),
where it differs from the study, read from `lab_findings.json` (computed from the per-seed study files).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.statistics import signal_probability

# Study's thresholds table on the base model's digit/format rate.
# Bounds: [0, 0.05) | [0.05, 0.15) | [0.15, 0.30] | (0.30, 1].
_TABLE = (
    ("0-5%", "Will fail", "Injection required"),
    ("5-15%", "Slow start", "Consider injection"),
    ("15-30%", "Works", "Injection optional"),
    (">30%", "Works well", "No injection needed"),
)


def _table_row(rate: float) -> tuple[str, str, str]:
    if rate < 0.05:
        return _TABLE[0]
    if rate < 0.15:
        return _TABLE[1]
    if rate <= 0.30:
        return _TABLE[2]
    return _TABLE[3]


def _chart_texts(rate: float, answer_kind: str) -> tuple[str, str, str]:
    """Flow-chart zone (< 0.10 | [0.10, 0.50] | > 0.50) and its two texts."""
    pct = f"{rate:.1%}"
    if rate < 0.10:
        prompt_first = (
            f"The base format rate ({pct}) is below 10%: first try prompt engineering "
            f"(an explicit 'answer with a single {answer_kind}' instruction, or `prompt.style=r1v` "
            "with <think>/<answer> tags) and re-measure the format rate. "
        )
        single = prompt_first + (
            "If it is still below 10%, injection is required: set `injection.mode=random`; "
            "`injection.rate.schedule=linear_decay` lets the policy take over as it learns the format."
        )
        multi = prompt_first + (
            "If it is still below 10%, injection is required: set `injection.mode=random` with "
            "`injection.rate.schedule=linear_decay` so injection fades out, and expect some loss of "
            "transfer to other domains (the study measured 30% vs 48% SuperCLEVR transfer)."
        )
        return "<10%: prompt engineering, then injection", single, multi
    if rate <= 0.50:
        single = (
            f"Single-domain deployment at a {pct} base format rate: injection is fine and "
            "faster (the study measured ~2.5x fewer steps to threshold); set "
            "`injection.mode=random` (optionally `injection.rate.schedule=linear_decay`)."
        )
        multi = (
            f"Multi-domain deployment at a {pct} base format rate: avoid or minimise injection "
            "(`injection.mode=none`); the study measured SuperCLEVR transfer of 30% with "
            "injection vs 48% without, from a 14% base. If learning is too slow, use "
            "`injection.mode=random` with `injection.rate.schedule=linear_decay`."
        )
        return "10-50%: depends on deployment", single, multi
    text = (
        f"At a {pct} base format rate use pure GRPO with `injection.mode=none`; both "
        "variants generalise well (study: 74-75% vs 72% transfer with `prompt.style=r1v` "
        "at a 99% format rate), so injection buys nothing."
    )
    return ">50%: pure GRPO", text, text


# The counting lab's measurements per flow-chart zone, computed from the committed per-seed study files
# (`python -m vlm_grpo.study.lab_findings` writes the file; a test checks it against docs/results/).
FINDINGS_FILE = Path(__file__).with_name("lab_findings.json")


def _points(stat: dict) -> str:
    lo, hi = stat["ci"]
    return f"{stat['mean'] * 100:+.1f} points [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def lab_texts(path: Path = FINDINGS_FILE) -> dict[str, str]:
    """What the lab measured in each flow-chart zone, in words, from the findings file."""
    f = json.loads(path.read_text())
    severe, weak, strong = f["severe"], f["weak"], f["strong"]
    gentler = sorted(-severe[k]["mean"] * 100 for k in ("transfer_linear_decay", "transfer_adaptive"))
    return {
        "<10%": (
            f"The counting lab disagrees on 'required' at G 8 x 4 prompts: from a {severe['base_rate']:.1%} sampled "
            f"rate, plain GRPO reached 90 % held-out answer-present on {severe['none_ap90_reached']} of "
            f"{severe['seeds']} seeds within {severe['budget']} steps (median step {severe['none_ap90_median']:g}, as "
            f"with injection), and injection changed transfer by {_points(severe['transfer'])} (linear decay or "
            f"adaptive: {gentler[0]:.1f}-{gentler[1]:.1f} points lost). Try `injection.mode=none` first and watch "
            "`groups/frac_zero_std_sampled`; with fewer samples per group the map below is the closer guide."
        ),
        "10-50%": (
            f"The counting lab, from a {weak['base_rate']:.1%} sampled rate at G 8 x 4 prompts: injection reached "
            f"70 % held-out accuracy by step 30 on {weak['acc70_by_30']['inject']} of {weak['seeds']} seeds, "
            f"plain GRPO on {weak['acc70_by_30']['none']} ({weak['acc70_by_budget']['none']} by step "
            f"{f['severe']['budget']}); "
            f"90 % answer-present came at a median step {weak['ap90_median']['inject']:g} against "
            f"{weak['ap90_median']['none']:g}, not the study's 2.5x fewer steps; transfer changed by "
            f"{_points(weak['transfer'])}: the study's direction."
        ),
        ">50%": (
            "The counting lab agrees: under the r1v prompt injection changed in-domain accuracy by "
            f"{_points(strong['in_domain'])} and transfer by {_points(strong['transfer'])}."
        ),
    }


def recommend(format_rate: float, group_size: int = 8, answer_kind: str = "number") -> dict:
    """Apply the study's decision framework to a base model's format (answer-present) rate;
    `answer_kind` is what the task's answer is (the prompt-engineering advice names it).

    Returns a dict with

    - ``band`` / ``viability`` / ``recommendation``: the thresholds-table row, bands
      ``[0, 0.05)`` "0-5%", ``[0.05, 0.15)`` "5-15%", ``[0.15, 0.30]`` "15-30%",
      ``(0.30, 1]`` ">30%";
    - ``zone``: the flow-chart branch, ``< 0.10`` | ``[0.10, 0.50]`` | ``> 0.50``;
    - ``single_domain`` / ``multi_domain``: actionable advice naming the
      ``injection.mode`` / ``injection.rate.schedule`` / ``prompt.style`` options;
    - ``lab``: what the counting lab measured in that zone (docs/results.md);
    - ``signal_probability``: :func:`signal_probability` at ``group_size``.
    """
    if isinstance(format_rate, bool) or not 0.0 <= format_rate <= 1.0:
        raise ValueError(f"format_rate must be in [0, 1], got {format_rate!r}")
    band, viability, table_rec = _table_row(format_rate)
    zone, single, multi = _chart_texts(format_rate, answer_kind)
    return {
        "band": band,
        "viability": viability,
        "recommendation": table_rec,
        "zone": zone,
        "single_domain": single,
        "multi_domain": multi,
        "lab": lab_texts()[zone.split(":")[0]],
        "signal_probability": signal_probability(format_rate, group_size),
    }
