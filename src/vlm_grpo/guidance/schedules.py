"""Schedules: how a quantity moves over training (the injection rate, the SFT weight, the prefix share,
the distillation weight).

Each quantity is one `config_sections.Schedule` (nested in its section: `injection.rate`, `sft.coef`,
`injection.prefix_ratio`, `distill.coef`); its `schedule` names a shape registered here, which maps (the schedule,
step, max_steps, the step's sampled answer-present rate) to a value in [0, 1]:
- `constant`: `value`;
- `linear_decay`: the study's proposal, initial -> final over the first `decay_fraction` of training
  (0.8 -> 0.0 over 70 % for injection), then final;
- `linear`: initial at step 0 -> final at the last step (the whole run; a decaying prefix share);
- `adaptive`: `value` while the sampled answer-present rate is below `low`, 0 from `high`, linear
  between: guidance fades as the format is learned.
A new shape is one function registered in SCHEDULES; it then serves every quantity that moves.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config_sections import Schedule
from ..registry import Registry

Shape = Callable[[Schedule, int, int, float], float]
"""(schedule, step (0-based), max_steps, the step's sampled answer-present rate) -> the value."""


def constant(schedule: Schedule, step: int, max_steps: int, answer_present_rate: float) -> float:
    return schedule.value


def linear_decay(schedule: Schedule, step: int, max_steps: int, answer_present_rate: float) -> float:
    end = schedule.decay_fraction * max_steps
    if end <= 0 or step >= end:
        return schedule.final
    progress = step / end
    return schedule.initial * (1 - progress) + schedule.final * progress


def linear(schedule: Schedule, step: int, max_steps: int, answer_present_rate: float) -> float:
    progress = step / (max_steps - 1) if max_steps > 1 else 1.0  # the last step gets final
    return schedule.initial * (1 - progress) + schedule.final * progress


def adaptive(schedule: Schedule, step: int, max_steps: int, answer_present_rate: float) -> float:
    if answer_present_rate < schedule.low:
        return schedule.value
    if answer_present_rate >= schedule.high:
        return 0.0
    return schedule.value * (schedule.high - answer_present_rate) / (schedule.high - schedule.low)


SCHEDULES: Registry[Shape] = Registry("schedule")
for _name, _shape in (
    ("constant", constant),
    ("linear_decay", linear_decay),
    ("linear", linear),
    ("adaptive", adaptive),
):
    SCHEDULES.register(_name, _shape)


def scheduled(schedule: Schedule, step: int, max_steps: int, answer_present_rate: float = 0.0) -> float:
    """The quantity's value at `step` (0-based)."""
    return SCHEDULES.get(schedule.schedule)(schedule, step, max_steps, answer_present_rate)


def check_schedule(key: str, schedule: Schedule, need) -> None:
    """A section's schedule: its values, and a shape that is registered (a plug-in's as well)."""
    schedule.check(key, need)
    known = SCHEDULES.names()
    need(schedule.schedule in known, f"{key}.schedule={schedule.schedule!r} is not one of {', '.join(known)}")
