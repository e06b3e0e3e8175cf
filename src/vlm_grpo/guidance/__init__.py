"""Guidance: remedies for groups without a learning signal (guidance injection and its schedules)."""

from .injection import MODES, SCHEDULES, Injector, check_demonstrations, rows_to_inject, schedule_value

__all__ = ["Injector", "MODES", "SCHEDULES", "check_demonstrations", "rows_to_inject", "schedule_value"]
