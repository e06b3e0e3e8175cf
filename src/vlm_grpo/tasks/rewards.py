"""Rewards that report their parts, not just a float.

Built-in rewards ask the task the run trains on: `answer` is the study's ternary reward (+1
correct, 0 wrong answer, -1 no answer the task can read), `answer_strict` reads the answer tags
only, as R1-V scores, so numbers compare with published ones; `counting` and `counting_strict` are
the study's names for the same two; `format` is 1 when the completion is in the prompt style's own
format. A user reward is `package.module:function` taking (completion, target, style), the target
being the ground truth as the task reads it. Every score also carries the parts the metrics need
(answer present, correct, in the style's format), computed with the task's parser whatever reward
is trained on.

A Python callable with TRL's signature, `fn(completions, answer, **kwargs) -> list[float]`, is a
`BatchReward`: the trainer calls it once per step with every sampled completion (`Scorer.score_all`),
`answer` holding the ground truths as the task reads them, `prompts` the questions, and the data set's
other columns when its source can tell them. Rows scored alone (injected demonstrations, the start-up
check of demonstrations) call it with lists of one and no `prompts` or columns: a reward that needs
them must take them as optional keywords. A None in what it returns counts as 0, as TRL's nansum does.
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


class BatchReward:
    """A TRL-shaped reward callable, usable where a per-completion `RewardFn` is expected."""

    def __init__(self, fn: Callable[..., Sequence[float | None]], columns: Callable[[str], dict] | None = None):
        self.fn = fn
        self.columns = columns
        """Sample id -> the row's other columns (None: the source keeps none)."""
        self.name = f"{getattr(fn, '__module__', None) or 'python'}:{getattr(fn, '__qualname__', type(fn).__name__)}"

    def __call__(self, completion: str, answer: Any, style: PromptStyle) -> float:
        return self.batch([completion], [answer])[0]

    def batch(self, completions: Sequence[str], answers: Sequence[Any], samples: Sequence[Any] = ()) -> list[float]:
        """One value per completion; `samples` (with .id and .question) add `prompts` and the other columns."""
        kwargs: dict[str, list] = {}
        if samples:
            kwargs["prompts"] = [s.question for s in samples]
            rows = [self.columns(s.id) if self.columns else {} for s in samples]
            shared = set.intersection(*(set(r) for r in rows)) - {"completions", "answer", "prompts"}
            kwargs.update({key: [r[key] for r in rows] for key in sorted(shared)})
        values = list(self.fn(completions=list(completions), answer=list(answers), **kwargs))
        if len(values) != len(completions):
            raise ValueError(f"reward {self.name} returned {len(values)} values for {len(completions)} completions")
        return [0.0 if v is None else float(v) for v in values]


def resolve(name: str | Callable, task: Task | None = None) -> RewardFn:
    """A registered name, `package.module:function` imported from exactly what the user named, or a
    TRL-shaped callable (wrapped as a `BatchReward`)."""
    if callable(name):
        return name if isinstance(name, BatchReward) else BatchReward(name)
    if name in REWARDS:
        return REWARDS.get(name)(task or CountingTask())
    if ":" not in name:
        raise ValueError(f"unknown reward {name!r}: use one of {', '.join(REWARDS.names())} or 'module:function'")
    return import_object(name, "reward")


class Scorer:
    """Scores completions with the configured weighted rewards and the task's parts."""

    def __init__(
        self,
        names: Sequence[str | Callable],
        weights: Sequence[float] | None,
        style: PromptStyle,
        task: Task | None = None,
    ):
        self.task = task or CountingTask()
        self.fns = [resolve(n, self.task) for n in names]
        self.names = [fn.name if isinstance(fn, BatchReward) else n for n, fn in zip(names, self.fns)]
        self.weights = list(weights) if weights is not None else [1.0] * len(self.fns)
        self.style = style

    def __call__(self, completion: str, answer: Any) -> Score:
        reward = sum(w * float(fn(completion, answer, self.style)) for fn, w in zip(self.fns, self.weights))
        return self._score(completion, answer, reward)

    def score_all(self, completions: Sequence[str], samples: Sequence[Any]) -> list[Score]:
        """Completion i of samples[i] (with .answer, .question, .id): batch rewards are called once for
        all of them, the others per completion; the sums are the same as `__call__`'s, term by term."""
        answers = [s.answer for s in samples]
        values = [
            fn.batch(completions, answers, samples)
            if isinstance(fn, BatchReward)
            else [fn(c, a, self.style) for c, a in zip(completions, answers)]
            for fn in self.fns
        ]
        return [
            self._score(c, a, sum(w * float(v[i]) for v, w in zip(values, self.weights)))
            for i, (c, a) in enumerate(zip(completions, answers))
        ]

    def _score(self, completion: str, answer: Any, reward: float) -> Score:
        parsed = self.task.parse(completion, answer)
        return Score(
            reward=reward,
            answer_present=parsed is not None,
            correct=self.task.is_correct(parsed, answer),
            strict_correct=self.task.is_correct(self.task.parse_strict(completion, answer), answer),
            format_ok=self.style.format_ok(completion),
            parsed=parsed,
        )
