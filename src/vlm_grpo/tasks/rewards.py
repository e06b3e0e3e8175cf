"""Rewards that report their parts, not just a float.

Built-in rewards ask the task the run trains on: `answer` is the study's ternary reward (+1
correct, 0 wrong answer, -1 no answer the task can read), `answer_strict` reads the answer tags
only, as R1-V scores, so numbers compare with published ones; `counting` and `counting_strict` are
the study's names for the same two; `format` is 1 when the completion is in the prompt style's own
format. A user reward is `package.module:function` taking (completion, target, style), the target
being the ground truth as the task reads it. Every score also carries the parts the metrics need
(answer present, correct, in the style's format), computed with the task's parser whatever reward
is trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..registry import Registry, import_object
from .base import Score, Task
from .counting import CountingTask
from .styles import PromptStyle

RewardFn = Callable[[str, Any, PromptStyle], float]


def format_reward(completion: str, answer: Any, style: PromptStyle) -> float:
    """1 when the completion is in the style's format, else 0."""
    return 1.0 if style.format_ok(completion) else 0.0


# name -> factory(task) -> reward function; the factory binds the task the run trains on.
REWARDS: Registry[Callable[[Task], RewardFn]] = Registry("reward")
for _name in ("answer", "counting"):
    REWARDS.register(_name, lambda task: lambda c, a, s: task.reward(c, a))
for _name in ("answer_strict", "counting_strict"):
    REWARDS.register(_name, lambda task: lambda c, a, s: task.strict_reward(c, a))
REWARDS.register("format", lambda task: format_reward)


def register_reward(name: str, factory: Callable[[Task], RewardFn]) -> None:
    REWARDS.register(name, factory)


def resolve(name: str, task: Task | None = None) -> RewardFn:
    """A registered name, or `package.module:function` imported from exactly what the user named."""
    if name in REWARDS:
        return REWARDS.get(name)(task or CountingTask())
    if ":" not in name:
        raise ValueError(f"unknown reward {name!r}: use one of {', '.join(REWARDS.names())} or 'module:function'")
    return import_object(name, "reward")


class Scorer:
    """Scores completions with the configured weighted rewards and the task's parts."""

    def __init__(
        self, names: Sequence[str], weights: Sequence[float] | None, style: PromptStyle, task: Task | None = None
    ):
        self.task = task or CountingTask()
        self.fns = [resolve(n, self.task) for n in names]
        self.names = list(names)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.fns)
        self.style = style

    def __call__(self, completion: str, answer: Any) -> Score:
        reward = sum(w * float(fn(completion, answer, self.style)) for fn, w in zip(self.fns, self.weights))
        parsed = self.task.parse(completion, answer)
        return Score(
            reward=reward,
            answer_present=parsed is not None,
            correct=self.task.is_correct(parsed, answer),
            strict_correct=self.task.is_correct(self.task.parse_strict(completion, answer), answer),
            format_ok=self.style.format_ok(completion),
            parsed=parsed,
        )
