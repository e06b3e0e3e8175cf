"""Counting: "how many objects are in the image?", answered by an integer (the study's task).

The parser is the study's: the number inside `<answer>` tags if there is one, else the last
integer in the text, else no answer. A data row's answer is an integer, a digit string, or
CLEVR-cogen's `<answer> N </answer>`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import BadSample
from .base import Task

_TAG = re.compile(r"<answer>\s*(\d+)\s*</answer>")
_NUMBER = re.compile(r"\b(\d+)\b")
_ROW_ANSWER = re.compile(r"\s*(?:<answer>)?\s*(-?\d+)\s*(?:</answer>)?\s*")
# A digit run longer than this cannot be a count; int() of a very long run is also refused by Python.
_MAX_DIGITS = 18

NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
)


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


class CountingTask(Task):
    name = "counting"
    answer_kind = "number"
    answer_pattern = r"\d+"
    present_label = "number present"
    reasoning = (
        "I count the objects in the image one by one.",
        "Let me look at each object in the scene and count them.",
        "I go over the image from left to right and count every object.",
        "Counting all the objects I can see in the image.",
        "I check each shape in the picture and keep a running count.",
        "I scan the scene and count the objects, including partly hidden ones.",
    )

    def read_answer(self, value: Any, row: str) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str):
            match = _ROW_ANSWER.fullmatch(value)
            if match:
                return int(match.group(1))
        raise BadSample(f"{row}: answer {value!r} is not an integer")

    def parse(self, completion: str, target: Any = None) -> int | None:
        return parse_answer(completion)

    def parse_strict(self, completion: str, target: Any = None) -> int | None:
        return parse_strict(completion)
