"""Guidance: remedies for groups without a learning signal (injection, dynamic sampling, supervised
terms on demonstrations) and the schedules they share."""

from . import dynamic_sampling
from .injection import MODES, Injector, check_demonstrations, rows_to_inject
from .schedules import SCHEDULES, Ramp, prefix_ratio, ramp_value, schedule_value, sft_coef

__all__ = [
    "Injector",
    "dynamic_sampling",
    "MODES",
    "SCHEDULES",
    "Ramp",
    "check_demonstrations",
    "prefix_ratio",
    "ramp_value",
    "rows_to_inject",
    "schedule_value",
    "sft_coef",
]
