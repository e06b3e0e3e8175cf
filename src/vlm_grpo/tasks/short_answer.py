"""Short answers (VQA-style): a word or short phrase, matched after normalisation.

Normalisation follows the VQA evaluation's answer processing: lower case, punctuation removed
(a decimal point between digits and thousands commas kept as numbers), the articles "a", "an",
"the" dropped, and number words up to twenty written as digits. A row's `answer` is a string, a
number, or a list of accepted strings; a completion is correct when its normalised answer equals
any accepted one. The parser reads the first non-empty answer tag, else the last "answer is X" /
"answer: X" up to the end of that sentence, else the whole completion when it is one short line
(at most `max_words` words); a longer free-form reply holds no answer it can read.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import BadSample
from .base import Task, answer_list, first_in_tags
from .counting import NUMBER_WORDS

_NUMBER_WORDS = {
    word: str(value) for value, word in enumerate(NUMBER_WORDS + ("seventeen", "eighteen", "nineteen", "twenty"))
}
_ARTICLES = {"a", "an", "the"}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PUNCTUATION = re.compile(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_")
_MARKUP = re.compile(r"</?[A-Za-z_]+>")  # tags are not words of an answer
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:(?i:is)|:)\s*(.+?)\s*(?:[.!](?:\s|$)|\n|$)")


def normalize(text: str) -> str:
    """VQA-style normal form: lower case, no punctuation or articles, number words as digits."""
    text = _PUNCTUATION.sub(" ", _THOUSANDS.sub("", text.lower()))
    return " ".join(_NUMBER_WORDS.get(word, word) for word in text.split() if word not in _ARTICLES)


class ShortAnswerTask(Task):
    name = "short_answer"
    answer_kind = "word"
    answer_pattern = r"[^<>\n]{1,80}"

    def __init__(self, max_words: int = 5):
        self.max_words = max_words

    def read_answer(self, value: Any, row: str) -> tuple[str, ...]:
        accepted = tuple(str(v).strip() for v in answer_list(value, row) if not isinstance(v, (dict, list)))
        if not accepted or not all(normalize(a) for a in accepted):
            raise BadSample(f"{row}: answer {value!r} is not a non-empty string or list of strings")
        return accepted

    def parse(self, completion: str, target: Any = None) -> str | None:
        found = self.parse_strict(completion)
        if found is not None:
            return found
        said = [m.group(1) for m in _ANSWER_IS.finditer(completion) if normalize(m.group(1))]
        if said:
            return said[-1].strip()
        line = _MARKUP.sub(" ", completion).strip().rstrip(".!")
        if line and "\n" not in line and len(line.split()) <= self.max_words and normalize(line):
            return line
        return None

    def parse_strict(self, completion: str, target: Any = None) -> str | None:
        return first_in_tags(completion, lambda content: content if normalize(content) else None)

    def is_correct(self, parsed: Any, target: Any) -> bool:
        return parsed is not None and normalize(parsed) in {normalize(a) for a in target}

    def format_answer(self, target: tuple[str, ...]) -> str:
        return target[0]

    def describe(self, target: tuple[str, ...]) -> list[str]:
        return list(target)
