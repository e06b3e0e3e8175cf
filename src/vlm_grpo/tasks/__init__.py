"""Tasks (what is asked, how answers are read and checked), prompt styles and rewards.

`get_task(name, options)` returns a registered task built with `options` (the config's
`task_options`), or the user's `package.module:ClassName`; `register_task(name, factory)` adds one
(a plug-in's way in). Built in: `counting` (the study's), `multiple_choice`, `short_answer`,
`numeric`, and `math` (with the optional extra `vlm-grpo[math]`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..registry import Registry, import_object
from .base import Score, Task
from .counting import CountingTask
from .math import MathTask
from .multiple_choice import Choice, MultipleChoiceTask
from .numeric import NumericTask
from .short_answer import ShortAnswerTask

TASKS: Registry[Callable[..., Task]] = Registry("task")
for _task in (CountingTask, MultipleChoiceTask, ShortAnswerTask, NumericTask, MathTask):
    TASKS.register(_task.name, _task)


def register_task(name: str, factory: Callable[..., Task]) -> None:
    TASKS.register(name, factory)


def get_task(name: str = "counting", options: Mapping[str, Any] | None = None) -> Task:
    """The task `name` (registered, or `package.module:ClassName`) built with `options` as keywords."""
    factory = TASKS.get(name) if name in TASKS or ":" not in name else import_object(name, "task")
    options = dict(options or {})
    accepted = _keywords(factory)
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise ValueError(f"task {name!r} has no option {', '.join(unknown)} (its task_options: {known})")
    task = factory(**options)
    if not isinstance(task, Task):
        raise ValueError(f"task {name!r} did not build a Task (got {type(task).__name__})")
    return task


def _keywords(factory: Callable) -> set[str] | None:
    """The keyword options a task factory takes (None: it takes any)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


__all__ = ["Choice", "Score", "Task", "TASKS", "get_task", "register_task"]
