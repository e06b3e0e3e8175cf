"""Tasks (what is asked, how answers are read and checked), prompt styles and rewards.

`get_task(name)` returns a registered task; `register_task(name, factory)` adds one (a plug-in's
way in). Built in: `counting`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .base import Score, Task
from .counting import CountingTask

TASKS: Registry[Callable[[], Task]] = Registry("task")
TASKS.register("counting", CountingTask)


def register_task(name: str, factory: Callable[[], Task]) -> None:
    TASKS.register(name, factory)


def get_task(name: str = "counting") -> Task:
    return TASKS.get(name)()


__all__ = ["Score", "Task", "get_task", "register_task"]
