"""Advice from the measured map: the counting lab's map cell nearest to a user's setting, and what
injection did there (`vlm-grpo study --preset map`; docs/results.md, section 5).

The map varies one factor at a time around a centre (base answer-present rate, prompts per step,
group size, learning rate). A setting beyond the levels it measured is not covered and gets no cell;
inside them, "nearest" is counted in grid steps along each factor: the base rate
on a log scale (the map's two rates, 2.2 % and 12.9 %, are one step apart), prompts per step and G
in doublings. Only cells at the study's learning rate are candidates: `assess` runs before a
learning rate is chosen. `map_advice.json` beside this module is written by
`python -m vlm_grpo.study.map_report <study> --advice src/vlm_grpo/evaluation/map_advice.json`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ADVICE_FILE = Path(__file__).with_name("map_advice.json")
STUDY_LEARNING_RATE = 1e-5
ARM_NAMES = {
    "random": "the study's injection (random, every group)",
    "rate": "`rate` 0.25",
    "sampled": "the study's injection with demonstrations out of the group statistics (`group_stats=sampled`)",
}


def _steps(cell: dict, rate: float, prompts_per_step: int, group_size: int, rate_step: float) -> float:
    """Distance in grid steps: log base rate (one step = the map's two rates), doublings of B and G."""
    floor = 1e-3  # a measured 0 % sits a step below the map's lowest rate, not infinitely far
    along_rate = abs(math.log(max(rate, floor) / max(cell["base_rate"], floor))) / rate_step
    along_b = abs(math.log2(prompts_per_step / cell["prompts_per_step"])) / 2  # the map's B: 1, 4, 16
    along_g = abs(math.log2(group_size / cell["num_generations"]))  # its G: 4, 8, 16
    return along_rate + along_b + along_g


def nearest_cell(cells: list[dict], rate: float, prompts_per_step: int, group_size: int) -> str:
    """The name of the map cell at the study's learning rate nearest to the setting."""
    candidates = {c["cell"]: c for c in cells if math.isclose(c["learning_rate"], STUDY_LEARNING_RATE)}
    rates = sorted({c["base_rate"] for c in candidates.values()})
    rate_step = math.log(rates[-1] / rates[0]) if len(rates) > 1 and rates[0] > 0 else 1.0
    return min(candidates, key=lambda name: _steps(candidates[name], rate, prompts_per_step, group_size, rate_step))


def uncovered(cells: list[dict], rate: float, prompts_per_step: int, group_size: int) -> list[str]:
    """Where the setting lies outside the range the map measured at the study's learning rate (empty:
    covered); the map says nothing about a base rate, B or G beyond the levels it ran."""
    candidates = [c for c in cells if math.isclose(c["learning_rate"], STUDY_LEARNING_RATE)]
    out = []
    for value, key, text, fmt in (
        (rate, "base_rate", "base answer-present", "{:.1%}"),
        (prompts_per_step, "prompts_per_step", "prompts per step", "{:g}"),
        (group_size, "num_generations", "G", "{:g}"),
    ):
        low, high = min(c[key] for c in candidates), max(c[key] for c in candidates)
        if not low <= value <= high:
            out.append(f"{text} {fmt.format(value)} (measured {fmt.format(low)} to {fmt.format(high)})")
    return out


def _interval(ci: list | None, scale: float = 1.0, digits: int = 1) -> str:
    return f" [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]" if ci else ""


def _speed_text(speed: dict, what: str) -> tuple[str, bool]:
    """A speed-up (none / injection, in steps) in words, and whether it is measurably above 1."""
    if speed.get("ratio") is None:
        return f"neither arm reached {what} within the budget", False
    bound = {"=": "", ">=": "at least ", "<=": "at most "}.get(speed.get("kind") or "=", "")
    ci = speed.get("ci")
    faster = (ci[0] > 1) if ci else speed["ratio"] > 1 and speed.get("kind") != "<="
    return f"{bound}{speed['ratio']:.2f}x{_interval(ci, digits=2)} to {what}", faster


def _arm_text(arm: dict) -> tuple[str, bool, bool]:
    """One arm's numbers in words; whether it was measurably faster, and measurably costlier in transfer."""
    present, faster_present = _speed_text(arm["speedup_sampled_present_90"], "90 % sampled answer-present")
    accuracy, faster_accuracy = _speed_text(arm["speedup_heldout_accuracy_70"], "70 % held-out accuracy")
    transfer = arm["transfer_difference"]
    mean, ci = transfer.get("mean"), transfer.get("ci") or arm.get("transfer_with_scenes")
    costly = mean is not None and ((ci[1] < 0) if ci else mean < 0)
    change = f"transfer {mean * 100:+.1f} points{_interval(ci, 100)}" if mean is not None else "transfer not measured"
    speeds = f"speed-up (above 1: injection sooner) {present}, {accuracy}"
    return f"{ARM_NAMES.get(arm['arm'], arm['arm'])}: {speeds}; {change}", faster_present or faster_accuracy, costly


def map_advice(rate: float, prompts_per_step: int, group_size: int, path: Path = ADVICE_FILE) -> dict | None:
    """The nearest measured cell and what injection did there, in words (None without a map file).
    A setting outside the range the map measured gets no cell (``cell`` None) and says so.

    Returns ``cell`` (its name), ``setting`` (the cell's base rate, B, G, learning rate, seeds),
    ``text`` (the advice, naming the cell and its numbers), and ``injection_paid`` (some arm was
    measurably faster without a measurable transfer cost)."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    cells = data["cells"]
    outside = uncovered(cells, rate, prompts_per_step, group_size)
    if outside:
        text = (
            f"From the measured map (the counting lab, `{data['source']}`): it does not cover this setting, "
            f"{'; '.join(outside)}, so it has no cell to cite."
        )
        return {"cell": None, "setting": None, "text": text, "injection_paid": None}
    name = nearest_cell(cells, rate, prompts_per_step, group_size)
    arms = [c for c in cells if c["cell"] == name]
    first = arms[0]
    setting = (
        f"base answer-present {first['base_rate']:.1%}, {first['prompts_per_step']} prompts x G "
        f"{first['num_generations']}, learning rate {first['learning_rate']:g}, {first['seeds']} seeds per arm"
    )
    parts, paid = [], False
    for arm in arms:
        text, faster, costly = _arm_text(arm)
        parts.append(text)
        paid = paid or (faster and not costly)
    verdict = (
        "there injection paid: measurably sooner without a measurable transfer cost"
        if paid
        else "there injection did not pay: not measurably sooner than plain GRPO, or sooner at a transfer cost"
    )
    text = (
        f"From the measured map (the counting lab, `{data['source']}`), nearest cell '{name}' ({setting}): "
        f"{'; '.join(parts)}. So {verdict}."
    )
    return {"cell": name, "setting": setting, "text": text, "injection_paid": paid}
