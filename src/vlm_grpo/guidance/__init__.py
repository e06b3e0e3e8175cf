"""Guidance: remedies for groups without a learning signal (guidance injection and its schedules)."""

from . import dynamic_sampling
from .injection import MODES, SCHEDULES, Injector, check_demonstrations, rows_to_inject, schedule_value

__all__ = [
    "Injector",
    "dynamic_sampling",
    "MODES",
    "SCHEDULES",
    "check_demonstrations",
    "rows_to_inject",
    "schedule_value",
]
