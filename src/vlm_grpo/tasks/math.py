"""Math: answers checked symbolically with `math-verify`, as R1-style math RL checks them.

Needs the optional extra `vlm-grpo[math]`. A row's `answer` is a LaTeX or plain expression
(`\\frac{1}{2}`, `0.5`, `x^2+1`) or a number. The parser gives math-verify the first answer tag's
content when there is one, else the whole completion (math-verify finds `\\boxed{}` and the last
expression itself); "answer present" means it extracted something. Equivalent forms (1/2, 0.5,
\\frac{2}{4}) are correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadSample
from .base import Task, first_in_tags, tag_contents


@dataclass(frozen=True)
class Expression:
    """An expression math-verify extracted: what it read (`text`) and its parsed forms."""

    text: str
    parsed: tuple

    def __str__(self) -> str:
        return self.text


def _math_verify():
    try:
        import math_verify
    except ImportError as exc:
        raise ImportError("task=math needs math-verify: pip install 'vlm-grpo[math]'") from exc
    return math_verify


def _expression(parsed: list) -> Expression | None:
    if not parsed:
        return None
    return Expression(parsed[-1] if isinstance(parsed[-1], str) else str(parsed[0]), tuple(parsed))


def extract(text: str) -> Expression | None:
    """What math-verify reads in `text` (plain, or LaTeX without delimiters), or None."""
    mv = _math_verify()
    return _expression(mv.parse(text) or mv.parse(f"${text}$"))


class MathTask(Task):
    name = "math"
    answer_kind = "expression"
    answer_pattern = r"[^<>]{1,200}"

    def __init__(self):
        _math_verify()  # fail at start-up, not at the first reward

    def read_answer(self, value: Any, row: str) -> Expression:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            inner = tag_contents(value)
            found = extract(inner[0] if inner else value.strip())
            if found is not None:
                return found
        raise BadSample(f"{row}: answer {value!r} is not an expression math-verify can read")

    def parse(self, completion: str, target: Any = None) -> Expression | None:
        found = self.parse_strict(completion)
        if found is not None or not completion.strip():
            return found
        return _expression(_math_verify().parse(completion))

    def parse_strict(self, completion: str, target: Any = None) -> Expression | None:
        return first_in_tags(completion, extract)

    def is_correct(self, parsed: Any, target: Any) -> bool:
        return parsed is not None and bool(_math_verify().verify(list(target.parsed), list(parsed.parsed)))

    def format_answer(self, target: Expression) -> str:
        return target.text

    def describe(self, target: Expression) -> str:
        return target.text
