"""The answer texts the counting lab's base models are pre-trained (SFT) on, written from a Scene.

Three kinds, mirroring how Qwen2-VL-2B answers a counting question:

- ``verbose``: a short scene description that spells every count in words and never contains a
  digit ("I can see seven objects: two cubes, three spheres and two cylinders. In total there are
  seven objects."). Every template ends with the total in words, so ``parse_count_word`` (the last
  number word) reads the model's count even when the answer holds no digit.
- ``bare``: just the digits ("7"), the plain prompt's rare in-format answer.
- ``r1v``: ``<think>reasoning in words</think><answer>7</answer>``, R1-V's format.

Texts are kept short (about 20-35 tokens of the lab tokenizer) so they fit well inside the
study's 50-token completion budget. ``corpus()`` is the text the lab tokenizer is trained on.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from ..tasks.counting import NUMBER_WORDS
from ..tasks.styles import R1V, R1V_SUFFIX, R1V_SYSTEM
from .scenes import CLEVR_QUESTION, SHAPES, SUPERCLEVR_QUESTIONS, Scene, colour_names

_WORD_VALUE = {w: i for i, w in enumerate(NUMBER_WORDS)}
_WORD_RE = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
PLURAL = {"cube": "cubes", "sphere": "spheres", "cylinder": "cylinders"}

_OPENINGS = (
    "I can see {n} objects: {parts}.",
    "The image shows {n} solids on the floor: {parts}.",
    "There are {n} objects in this picture: {parts}.",
    "This scene contains {parts}.",
    "I see {parts} on a plain floor.",
)
_TOTALS = (
    "In total there are {n} objects.",
    "So there are {n} objects in total.",
    "That makes {n} objects altogether.",
    "In total I count {n} objects.",
)
_THINK = (
    "I count the objects one by one: {parts}, so {n} in total.",
    "Looking at each shape in the scene I find {parts}. That is {n} objects.",
    "I scan the image from left to right and count {n} objects.",
    "There are {parts}, which makes {n} objects.",
)


def word(n: int) -> str:
    """A count in words ("seven"); counts past the word list fall back to "many"."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else "many"


def _join(items: list[str]) -> str:
    if not items:
        return "no objects at all"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _shape_parts(scene: Scene) -> str:
    """ "two cubes, one sphere and four cylinders" (counts per shape, in words)."""
    counts = Counter(o.shape for o in scene.objects)
    return _join([f"{word(k)} {PLURAL[s] if k > 1 else s}" for s in SHAPES if (k := counts[s])])


def _colour_parts(scene: Scene, rng: random.Random) -> str:
    """Up to three colour/shape groups, e.g. "two red cubes, one blue sphere and others"."""
    groups = Counter((o.color, o.shape) for o in scene.objects)
    keys = sorted(groups, key=lambda k: (-groups[k], k))[:3]
    items = [f"{word(groups[k])} {k[0]} {PLURAL[k[1]] if groups[k] > 1 else k[1]}" for k in keys]
    if sum(groups[k] for k in keys) < scene.count:
        items.append(rng.choice(("some other shapes", "a few other objects", "more objects")))
    return _join(items)


def verbose(scene: Scene, rng: random.Random) -> str:
    """A description in words, no digits, ending with the total count in words."""
    parts = _shape_parts(scene) if rng.random() < 0.5 else _colour_parts(scene, rng)
    n = word(scene.count)
    return rng.choice(_OPENINGS).format(n=n, parts=parts) + " " + rng.choice(_TOTALS).format(n=n)


def bare(scene: Scene, rng: random.Random | None = None) -> str:
    """Just the count in digits."""
    return str(scene.count)


def r1v(scene: Scene, rng: random.Random) -> str:
    """R1-V's format: reasoning in words inside <think>, the count in digits inside <answer>."""
    if rng.random() < 0.25:  # the project's own demonstration sentences, as guidance injection writes them
        return R1V.demonstration(scene.count, rng)
    think = rng.choice(_THINK).format(n=word(scene.count), parts=_shape_parts(scene))
    return f"<think>{think}</think><answer>{scene.count}</answer>"


def parse_count_word(text: str) -> int | None:
    """The last number word in a text ("... In total there are seven objects." -> 7), else None."""
    found = _WORD_RE.findall(text)
    return _WORD_VALUE[found[-1].lower()] if found else None


def corpus() -> list[str]:
    """Text the lab tokenizer is trained on: prompts, every question and sample answers of each kind."""
    from .scenes import render_scene

    lines = [R1V_SYSTEM, R1V_SUFFIX, "You are a helpful assistant.", CLEVR_QUESTION, *SUPERCLEVR_QUESTIONS]
    lines += [f"{q} {R1V_SUFFIX}" for q in (CLEVR_QUESTION, *SUPERCLEVR_QUESTIONS)]
    colours = colour_names()
    lines += [f"{word(k)} {c} {s} {PLURAL[s]}" for k in range(17) for c in colours for s in SHAPES][::3]
    rng = random.Random(0)
    for seed in range(120):  # seeds far outside the lab's rows; only the words matter here
        _, scene = render_scene(
            "lab-clevr" if seed % 2 else "lab-superclevr", 3_000_000 + seed, size=64, counts=(0, 16)
        )
        lines += [verbose(scene, rng), r1v(scene, rng), bare(scene)]
    return lines * 2
