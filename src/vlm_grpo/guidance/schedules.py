"""Schedules: how a guidance strength moves over training (injection rate, SFT weight, prefix share).

A schedule maps (its parameters, step, max_steps, the step's sampled answer-present rate) to a
value in [0, 1]:
- `constant`: the configured value;
- `linear_decay`: the study's proposal, initial -> final over the first `decay_fraction` of training
  (0.8 -> 0.0 over 70 % for injection), then final;
- `linear`: initial at step 0 -> final at the last step (the whole run; a decaying prefix share);
- `adaptive`: full value while the sampled answer-present rate is below `low`, 0 from `high`,
  linear between: guidance fades as the format is learned.
A quantity's schedule parameters are one `Ramp`, whatever it drives; a new schedule is one function
registered in SCHEDULES.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import InjectionConfig, SftConfig
from ..registry import Registry


@dataclass(frozen=True)
class Ramp:
    """One schedule's parameters, whatever quantity it drives."""

    schedule: str
    value: float
    """`constant`'s value and `adaptive`'s full value."""
    initial: float
    final: float
    decay_fraction: float
    low: float
    high: float

    @classmethod
    def of(cls, cfg, value: str, initial: str, final: str) -> Ramp:
        """The ramp of a config section whose schedule fields carry its quantity's name (injection's
        `rate`, `initial_rate`, `final_rate`; the SFT term's `coef`, ...) beside the shared ones."""
        return cls(
            cfg.schedule,
            getattr(cfg, value),
            getattr(cfg, initial),
            getattr(cfg, final),
            cfg.decay_fraction,
            cfg.adaptive_low,
            cfg.adaptive_high,
        )

    @classmethod
    def of_prefix(cls, cfg: InjectionConfig) -> Ramp:
        """The prefix share: `prefix_ratio` throughout, or linear from prefix_ratio_initial to
        prefix_ratio_final over the whole run when both are set."""
        if cfg.prefix_ratio_initial is None or cfg.prefix_ratio_final is None:
            return cls("constant", cfg.prefix_ratio, cfg.prefix_ratio, cfg.prefix_ratio, 1.0, 0.0, 1.0)
        start, end = cfg.prefix_ratio_initial, cfg.prefix_ratio_final
        return cls("linear", cfg.prefix_ratio, start, end, 1.0, 0.0, 1.0)


Schedule = Callable[[Ramp, int, int, float], float]


def constant(ramp: Ramp, step: int, max_steps: int, answer_present_rate: float) -> float:
    return ramp.value


def linear_decay(ramp: Ramp, step: int, max_steps: int, answer_present_rate: float) -> float:
    end = ramp.decay_fraction * max_steps
    if end <= 0 or step >= end:
        return ramp.final
    progress = step / end
    return ramp.initial * (1 - progress) + ramp.final * progress


def linear(ramp: Ramp, step: int, max_steps: int, answer_present_rate: float) -> float:
    progress = step / (max_steps - 1) if max_steps > 1 else 1.0  # the last step gets final
    return ramp.initial * (1 - progress) + ramp.final * progress


def adaptive(ramp: Ramp, step: int, max_steps: int, answer_present_rate: float) -> float:
    if answer_present_rate < ramp.low:
        return ramp.value
    if answer_present_rate >= ramp.high:
        return 0.0
    return ramp.value * (ramp.high - answer_present_rate) / (ramp.high - ramp.low)


SCHEDULES: Registry[Schedule] = Registry("schedule")
for _name, _schedule in (
    ("constant", constant),
    ("linear_decay", linear_decay),
    ("linear", linear),
    ("adaptive", adaptive),
):
    SCHEDULES.register(_name, _schedule)


def ramp_value(ramp: Ramp, step: int, max_steps: int, answer_present_rate: float) -> float:
    """The scheduled value at `step` (0-based)."""
    return SCHEDULES.get(ramp.schedule)(ramp, step, max_steps, answer_present_rate)


def schedule_value(cfg: InjectionConfig, step: int, max_steps: int, answer_present_rate: float) -> float:
    """The injection strength s at `step` (0-based); 0 without injection."""
    if cfg.mode == "none":
        return 0.0
    return ramp_value(Ramp.of(cfg, "rate", "initial_rate", "final_rate"), step, max_steps, answer_present_rate)


def sft_coef(cfg: SftConfig, step: int, max_steps: int, answer_present_rate: float) -> float:
    """CHORD's mixing weight mu at `step`; 0 when no supervised term is configured."""
    if cfg.schedule == "constant" and cfg.coef == 0:
        return 0.0
    return ramp_value(Ramp.of(cfg, "coef", "initial_coef", "final_coef"), step, max_steps, answer_present_rate)


def prefix_ratio(cfg: InjectionConfig, step: int, max_steps: int) -> float:
    """Share of a demonstration given as prefix at `step`."""
    return ramp_value(Ramp.of_prefix(cfg), step, max_steps, 0.0)
