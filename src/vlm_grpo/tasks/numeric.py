"""Numbers: a value within a tolerance of the ground truth.

Numbers are read in ASCII digits with an optional sign (`-` or the unicode minus), thousands
separators in groups of three (`1,000` is one thousand), a decimal point (`1.000` is one: a
decimal comma is not read), and simple fractions (`3/4`, `-1/2`). The parser reads the last
number of the first answer tag holding one, else the last number in the completion. A
completion is correct when |parsed - answer| <= max(abs_tol, rel_tol * |answer|).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import BadSample
from .base import Task, first_in_tags

_NUMBER = re.compile(
    r"(?<![0-9A-Za-z.,/])[-\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?:/[0-9]+)?"
)
_ROW_ANSWER = re.compile(r"\s*(?:<answer>)?\s*(.*?)\s*(?:</answer>)?\s*", re.DOTALL)


def to_number(text: str) -> float | None:
    """The value of one number as `_NUMBER` matches it (None for a zero denominator)."""
    text = text.replace(",", "").replace("\u2212", "-")
    numerator, _, denominator = text.partition("/")
    if denominator:
        return float(numerator) / float(denominator) if float(denominator) != 0 else None
    return float(numerator)


def last_number(text: str) -> float | None:
    values = [v for v in (to_number(m.group(0)) for m in _NUMBER.finditer(text)) if v is not None]
    return values[-1] if values else None


class NumericTask(Task):
    name = "numeric"
    answer_kind = "number"
    answer_pattern = r"[-\u2212]?[0-9][0-9,]*(?:\.[0-9]+)?(?:/[0-9]+)?"

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9):
        if rel_tol < 0 or abs_tol < 0:
            raise ValueError("task_options.rel_tol and abs_tol must be >= 0")
        self.rel_tol, self.abs_tol = rel_tol, abs_tol

    def read_answer(self, value: Any, row: str) -> float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            if np.isfinite(value):
                return float(value)
        elif isinstance(value, str):
            inner = _ROW_ANSWER.fullmatch(value).group(1)
            match = _NUMBER.fullmatch(inner)
            number = to_number(match.group(0)) if match else None
            if number is not None:
                return number
        raise BadSample(f"{row}: answer {value!r} is not a number")

    def parse(self, completion: str, target: Any = None) -> float | None:
        found = self.parse_strict(completion)
        return found if found is not None else last_number(completion)

    def parse_strict(self, completion: str, target: Any = None) -> float | None:
        return first_in_tags(completion, last_number)

    def is_correct(self, parsed: Any, target: Any) -> bool:
        return parsed is not None and abs(parsed - target) <= max(self.abs_tol, self.rel_tol * abs(target))

    def format_answer(self, target: float) -> str:
        return np.format_float_positional(target, trim="-")
