"""The Task interface: everything that depends on what is asked and how an answer is checked.

A task owns how a data row's answer is read, the completion parser (the study's: answer tag
first, else a fallback), "answer present" (the study's digit-extraction rate, generalised),
correctness, the ternary reward built from them, and the texts prompt styles and demonstrations
need (what the final answer is called, how it is written, short reasoning for r1v
demonstrations). Rewards, injection, metrics, assessment and evaluation ask the task; none of
them parses answers itself. A new task is one module that subclasses `Task` and registers it
(`vlm_grpo.tasks.register_task`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Score:
    """What one completion scored, and the parts the metrics need."""

    reward: float
    """Weighted sum of the configured reward functions."""
    number_present: bool
    """The task's parser read an answer (the study's digit-extraction / format rate)."""
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
    reasoning: tuple[str, ...]
    """Short, varied reasoning for r1v demonstrations: one fixed sentence would teach a constant string."""

    @abstractmethod
    def read_answer(self, value: Any, row: str) -> Any:
        """The ground truth from a data row's answer field; raises `data.BadSample` naming `row`."""

    @abstractmethod
    def parse(self, completion: str) -> Any:
        """The answer a completion gives (answer tags first, else the task's fallback), or None."""

    @abstractmethod
    def parse_strict(self, completion: str) -> Any:
        """The answer inside the completion's <answer> tags, or None."""

    def is_correct(self, parsed: Any, answer: Any) -> bool:
        return parsed is not None and parsed == answer

    def answer_present(self, completion: str) -> bool:
        """The study's format rate generalised: the parser reads an answer."""
        return self.parse(completion) is not None

    def reward(self, completion: str, answer: Any) -> float:
        """The study's ternary reward: +1 correct, 0 wrong answer, -1 no answer it can read."""
        return ternary(self.parse(completion), answer, self.is_correct)

    def strict_reward(self, completion: str, answer: Any) -> float:
        """The same ternary reward reading the answer tags only (R1-V's scoring)."""
        return ternary(self.parse_strict(completion), answer, self.is_correct)

    def format_answer(self, answer: Any) -> Any:
        """The answer as a demonstration writes it (substituted for `{answer}`)."""
        return answer


def ternary(parsed: Any, answer: Any, is_correct) -> float:
    if parsed is None:
        return -1.0
    return 1.0 if is_correct(parsed, answer) else 0.0
