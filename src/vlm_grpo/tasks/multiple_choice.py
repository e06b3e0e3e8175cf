"""Multiple choice: a question with lettered choices, answered by a letter.

A data row carries `choices` (a list of at least two strings); the prompt lists them under the
question as `(A) ...`, `(B) ...`, optionally shuffled per sample (`shuffle_choices`, seeded by
`seed` and the row id, so a sample always shows the same order). The row's `answer` is the
letter or the text of a choice. The parser reads, in order: the first answer tag it can read (a
choice's text, or a letter, possibly "(B)" or "B. text"), else the last "answer is X" /
"answer: X", else the last "(X)", else a lone letter ending the completion, else (with
`accept_choice_text`) the completion being a choice's text alone. Only the letters of the
question's choices are read, so "I" or "A" as words outside those positions are never letters.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadSample
from .base import Task, first_in_tags

LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class Choice:
    """The ground truth of a multiple-choice question: the correct letter and the choices shown."""

    letter: str
    options: tuple[str, ...]

    def __str__(self) -> str:
        return self.letter


def _plain(text: str) -> str:
    """Lower case, punctuation and extra spaces removed: how a choice's text is matched."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class MultipleChoiceTask(Task):
    name = "multiple_choice"
    answer_kind = "letter"
    answer_pattern = r"\(?[A-Z]\)?"
    reasoning = (
        "I compare each choice with the image.",
        "Let me check the choices one by one against the picture.",
        "I look at the image and rule out the wrong choices.",
        "Going through the options and the scene carefully.",
    )

    def __init__(self, shuffle_choices: bool = False, seed: int = 0, accept_choice_text: bool = True):
        self.shuffle_choices, self.seed, self.accept_choice_text = shuffle_choices, seed, accept_choice_text

    def read_sample(self, question: str, answer: Any, fields: Mapping[str, Any], row: str) -> tuple[str, Choice]:
        options = _options(fields.get("choices"), row)
        index = _answer_index(answer, options, row)
        order = list(range(len(options)))
        if self.shuffle_choices:
            random.Random(f"{self.seed}/{row}").shuffle(order)
        shown = tuple(options[i] for i in order)
        listing = "\n".join(f"({LETTERS[i]}) {text}" for i, text in enumerate(shown))
        return f"{question}\n{listing}", Choice(LETTERS[order.index(index)], shown)

    def read_answer(self, value: Any, row: str) -> Any:
        raise BadSample(f"{row}: a multiple-choice row needs its choices (a `choices` column)")

    def parse(self, completion: str, target: Any = None) -> str | None:
        letters = self._letters(target)
        found = first_in_tags(completion, lambda content: self._read_content(content, target, letters))
        if found is not None:
            return found
        for pattern in (_ANSWER_IS, _PARENS, _LONE_AT_END):
            hits = [m.group(1) for m in pattern.finditer(completion) if m.group(1) in letters]
            if hits:
                return hits[-1]
        return self._choice_by_text(completion, target)

    def parse_strict(self, completion: str, target: Any = None) -> str | None:
        letters = self._letters(target)
        return first_in_tags(completion, lambda content: self._read_content(content, target, letters))

    def is_correct(self, parsed: Any, target: Any) -> bool:
        return parsed is not None and parsed == target.letter

    def format_answer(self, target: Choice) -> str:
        return target.letter

    def _letters(self, target: Choice | None) -> str:
        return LETTERS[: len(target.options)] if target is not None else LETTERS

    def _read_content(self, content: str, target: Choice | None, letters: str) -> str | None:
        by_text = self._choice_by_text(content, target)  # "A dog" as a choice's text is not the letter A
        if by_text is not None:
            return by_text
        match = _TAG_LETTER.fullmatch(content)
        return match.group(1).upper() if match and match.group(1).upper() in letters else None

    def _choice_by_text(self, text: str, target: Choice | None) -> str | None:
        if not self.accept_choice_text or target is None:
            return None
        plain = _plain(text)
        hits = [LETTERS[i] for i, option in enumerate(target.options) if plain and _plain(option) == plain]
        return hits[0] if len(hits) == 1 else None


# Inside answer tags: a letter alone, "(B)", "B.", "B)" or "B: text" / "B. text".
_TAG_LETTER = re.compile(r"\(?([A-Za-z])\)?(?:[.:)]\s*.*|\s+.*)?", re.DOTALL)
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:(?i:is)|:)\s*\(?([A-Z])\)?(?!\w)")
_PARENS = re.compile(r"\(([A-Z])\)")
_LONE_AT_END = re.compile(r"(?:^|\s)\(?([A-Z])\)?[.!]?\s*$")


def _options(choices: Any, row: str) -> tuple[str, ...]:
    if isinstance(choices, str) or not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise BadSample(f"{row}: multiple choice needs `choices`, a list of at least two strings (got {choices!r})")
    if len(choices) > len(LETTERS):
        raise BadSample(f"{row}: {len(choices)} choices; at most {len(LETTERS)} can be lettered")
    options = tuple(str(c).strip() for c in choices)
    if not all(options):
        raise BadSample(f"{row}: a choice is empty")
    return options


def _answer_index(answer: Any, options: tuple[str, ...], row: str) -> int:
    text = str(answer).strip() if isinstance(answer, (str, int)) and not isinstance(answer, bool) else None
    if text is not None:
        letter = re.fullmatch(r"\(?([A-Za-z])\)?\.?", text)
        if letter and LETTERS.index(letter.group(1).upper()) < len(options):
            return LETTERS.index(letter.group(1).upper())
        matches = [i for i, option in enumerate(options) if _plain(option) == _plain(text)]
        if len(matches) == 1:
            return matches[0]
    raise BadSample(f"{row}: answer {answer!r} is not among the choices {list(options)}")
