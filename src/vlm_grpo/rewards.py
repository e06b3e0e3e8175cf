"""Rewards that report their parts, not just a float.

The study's counting reward: the number inside `<answer>` tags if there is one, else the last
integer in the text, else no number. +1 if it equals the ground truth, 0 for a wrong number, -1
for no number. `counting_strict` reads the tags only, as R1-V scores, so numbers compare with
published ones. Every score also carries the parts the metrics need (number present, correct,
in the prompt style's format), computed with the study's parser whatever reward is trained on.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from .prompts import PromptStyle

_TAG = re.compile(r"<answer>\s*(\d+)\s*</answer>")
_NUMBER = re.compile(r"\b(\d+)\b")
# A digit run longer than this cannot be a count; int() of a very long run is also refused by Python.
_MAX_DIGITS = 18


@dataclass(frozen=True)
class Score:
    reward: float
    """Weighted sum of the configured reward functions."""
    number_present: bool
    """The study's parser found a number (the digit-extraction / format rate)."""
    correct: bool
    """That number equals the ground truth."""
    strict_correct: bool
    """The number inside <answer> tags equals the ground truth (R1-V's scoring)."""
    format_ok: bool
    """The completion is in the prompt style's own format (a bare number; think/answer tags)."""
    parsed: int | None
    """The number read by the study's parser."""


def _to_int(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else -1


def parse_answer(text: str) -> int | None:
    """The study's parser: answer tag first, else the last integer, else None."""
    tag = _TAG.search(text)
    if tag:
        return _to_int(tag.group(1))
    numbers = _NUMBER.findall(text)
    return _to_int(numbers[-1]) if numbers else None


def parse_strict(text: str) -> int | None:
    """Tags only: the number inside the first <answer> tag, else None."""
    tag = _TAG.search(text)
    return _to_int(tag.group(1)) if tag else None


def ternary(parsed: int | None, answer: int) -> float:
    if parsed is None:
        return -1.0
    return 1.0 if parsed == answer else 0.0


def counting_reward(completion: str, answer: int, style: PromptStyle) -> float:
    """+1 correct, 0 wrong number, -1 no number (the study's reward)."""
    return ternary(parse_answer(completion), answer)


def counting_strict_reward(completion: str, answer: int, style: PromptStyle) -> float:
    """The same ternary reward reading the answer tags only."""
    return ternary(parse_strict(completion), answer)


def format_reward(completion: str, answer: int, style: PromptStyle) -> float:
    """1 when the completion is in the style's format, else 0."""
    return 1.0 if style.format_ok(completion) else 0.0


RewardFn = Callable[[str, int, PromptStyle], float]
REGISTRY: dict[str, RewardFn] = {
    "counting": counting_reward,
    "counting_strict": counting_strict_reward,
    "format": format_reward,
}


def resolve(name: str) -> RewardFn:
    """A registered name, or `package.module:function` imported from exactly what the user named."""
    if name in REGISTRY:
        return REGISTRY[name]
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"unknown reward {name!r}: use one of {', '.join(REGISTRY)} or 'module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"reward {name!r} could not be imported: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return fn


class Scorer:
    """Scores completions with the configured weighted rewards and the study's parts."""

    def __init__(self, names: Sequence[str], weights: Sequence[float] | None, style: PromptStyle):
        self.fns = [resolve(n) for n in names]
        self.names = list(names)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.fns)
        self.style = style

    def __call__(self, completion: str, answer: int) -> Score:
        reward = sum(w * float(fn(completion, answer, self.style)) for fn, w in zip(self.fns, self.weights))
        parsed = parse_answer(completion)
        return Score(
            reward=reward,
            number_present=parsed is not None,
            correct=parsed is not None and parsed == answer,
            strict_correct=parse_strict(completion) == answer,
            format_ok=self.style.format_ok(completion),
            parsed=parsed,
        )
