"""The Task interface: everything that depends on what is asked and how an answer is checked.

A task owns how a data row becomes a question and a ground truth (`read_sample`: multiple choice
lists its choices there), the completion parser (the study's: answer tag first, else a fallback),
"answer present" (the study's digit-extraction rate, generalised), correctness, the ternary reward
built from them, and the texts prompt styles and demonstrations need (what the final answer is
called, how it is written, short reasoning for r1v demonstrations). Rewards, injection, metrics,
assessment and evaluation ask the task; none of them parses answers itself. A new task is one
module that subclasses `Task` and registers it (`vlm_grpo.tasks.register_task`), or a class named
`package.module:ClassName` in the config's `task` key. Options from `task_options` arrive as
keyword arguments of its constructor.

The ground truth ("target") is whatever `read_sample` returns; the parser may read it for context
(the choices of a multiple-choice question), never to decide what the completion says.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadSample


@dataclass(frozen=True)
class Score:
    """What one completion scored, and the parts the metrics need."""

    reward: float
    """Weighted sum of the configured reward functions."""
    answer_present: bool
    """The task's parser read an answer (the study's digit-extraction / format rate, generalised)."""
    correct: bool
    """That answer is correct."""
    strict_correct: bool
    """The answer inside <answer> tags is correct (R1-V's scoring)."""
    format_ok: bool
    """The completion is in the prompt style's own format (a bare answer; think/answer tags)."""
    parsed: Any
    """The answer read by the task's parser (None: no answer)."""


class Task(ABC):
    """One kind of question with a checkable answer."""

    name: str
    answer_kind: str
    """What the final answer is, as the r1v instruction names it ("number", "letter", "word")."""
    answer_pattern: str
    """Regex of an answer written in format (a prompt style's format check embeds it)."""
    present_label: str = "answer present"
    """How tables name the answer-present rate (counting keeps the study's "number present")."""
    reasoning: tuple[str, ...] = (
        "I look at the image carefully before answering.",
        "Let me check the image and the question.",
        "I read the question and look at the picture.",
        "Looking at the image to find the answer.",
    )
    """Short, varied reasoning for r1v demonstrations: one fixed sentence would teach a constant string."""

    def read_sample(self, question: str, answer: Any, fields: Mapping[str, Any], row: str) -> tuple[str, Any]:
        """(The question as put to the model, the ground truth) from a data row's question, answer and
        other columns (`fields`: `choices` for multiple choice). Raises `BadSample` naming `row`."""
        return question, self.read_answer(answer, row)

    @abstractmethod
    def read_answer(self, value: Any, row: str) -> Any:
        """The ground truth from a data row's answer field; raises `BadSample` naming `row`."""

    @abstractmethod
    def parse(self, completion: str, target: Any = None) -> Any:
        """The answer a completion gives (answer tags first, else the task's fallback), or None."""

    @abstractmethod
    def parse_strict(self, completion: str, target: Any = None) -> Any:
        """The answer inside the completion's <answer> tags, or None."""

    def is_correct(self, parsed: Any, target: Any) -> bool:
        return parsed is not None and parsed == target

    def answer_present(self, completion: str, target: Any = None) -> bool:
        """The study's format rate generalised: the parser reads an answer."""
        return self.parse(completion, target) is not None

    def reward(self, completion: str, target: Any) -> float:
        """The study's ternary reward: +1 correct, 0 wrong answer, -1 no answer it can read."""
        return ternary(self.parse(completion, target), target, self.is_correct)

    def strict_reward(self, completion: str, target: Any) -> float:
        """The same ternary reward reading the answer tags only (R1-V's scoring)."""
        return ternary(self.parse_strict(completion, target), target, self.is_correct)

    def format_answer(self, target: Any) -> Any:
        """The answer as a demonstration writes it (substituted for `{answer}`)."""
        return target

    def describe(self, target: Any) -> Any:
        """The ground truth as records and reports write it (JSON-serialisable)."""
        return self.format_answer(target)


def ternary(parsed: Any, target: Any, is_correct: Callable[[Any, Any], bool]) -> float:
    if parsed is None:
        return -1.0
    return 1.0 if is_correct(parsed, target) else 0.0


_TAG_CONTENT = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANY_TAG = re.compile(r"</?answer>")


def tag_contents(text: str) -> list[str]:
    """The text inside every <answer>...</answer> pair, in order, with nested answer tags removed."""
    return [_ANY_TAG.sub("", m.group(1)).strip() for m in _TAG_CONTENT.finditer(text)]


def first_in_tags(text: str, read: Callable[[str], Any]) -> Any:
    """What `read` makes of the first answer tag whose content it can read, else None."""
    for content in tag_contents(text):
        value = read(content)
        if value is not None:
            return value
    return None


def answer_list(value: Any, row: str) -> list[Any]:
    """A data row's answer as a non-empty list (a single value, or a list of accepted values)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or any(v is None for v in values):
        raise BadSample(f"{row}: no answer")
    return values
