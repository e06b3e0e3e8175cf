"""Clips that need time: objects come into view one at a time, each leaving as the next one comes.

A clip is FRAMES frames of SIZE pixels. Its N objects (1-6) take turns: the frames are cut into N
runs, in order, and run j shows object j alone, still, on the floor of one of the counting lab's
looks (`scenes.draw_objects`). The question is how many objects appeared. Every frame shows exactly
one object whatever N is, so no single frame tells N: the best guess from one frame is the most
common count, 1 in 6 (counts are uniform), while the whole clip holds the answer. Two objects in a
row never share their colour and stand apart, so each arrival shows.

- ``lab-clips``: the `lab-clevr` look, one question;
- ``lab-clips-transfer``: the `lab-superclevr` look (floor, palette, light, sizes), varied wording;
- ``lab-clips-frame``: the middle frame of each ``lab-clips`` row alone, as a one-frame video: the
  same rows with the time taken away.

Each sample's `video` is its frames (PIL images, in order), sized for the lab's models already: 84 px
is 3 x 3 merged patches, 9 vision tokens per frame pair, 36 per clip. Rendering is deterministic per
(set, seed); the answer texts (verbose in words, bare digits, R1-V's format) are those the video base
was pre-trained on (`make_example`).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from PIL import Image

from ..data import Sample
from ..tasks import Task
from . import scenes
from .sources import LAB_SIZE

# The answer texts import `texts` and the prompt styles where they are written: the styles' module loads
# the plug-ins, this one among them, so importing it here would make registering the lab circular.

FRAMES = 8
SIZE = 84
COUNTS = (1, 6)
LOOKS = {"lab-clips": "lab-clevr", "lab-clips-transfer": "lab-superclevr"}
"""Each clip set and the scene look it draws in."""
ONE_FRAME = "lab-clips-frame"
QUESTION = "How many objects appeared in the clip?"
TRANSFER_QUESTIONS = (
    "How many objects came into view in this video?",
    "Count the objects that appear one after another. How many are there?",
    "How many different shapes showed up in the clip?",
    "What is the number of objects that appeared?",
)
_OPENINGS = (
    "The clip shows {parts}, each in turn.",
    "I see {parts} come and go.",
    "Objects come into view in turn: {parts}.",
    "In this video {parts} appear.",
)
_TOTALS = (
    "In total {n} {objects} appeared.",
    "So {n} {objects} appeared in all.",
    "That makes {n} {objects} altogether.",
)
_THINK = (
    "The objects come in turn: {parts}, so {n} in total.",
    "I follow the clip frame by frame and see {parts}. That is {n} {objects}.",
    "Each object leaves as the next comes; I count {n} of them.",
)


@dataclass(frozen=True)
class Clip:
    name: str
    frames: tuple[Image.Image, ...]
    objects: tuple[scenes.SceneObject, ...]
    """The objects in the order they appear."""
    shown: tuple[int, ...]
    """Per frame, the index of the object in view."""
    question: str

    @property
    def count(self) -> int:
        return len(self.objects)


def _runs(n: int, frames: int, rng: random.Random) -> tuple[int, ...]:
    """Per frame, which of `n` objects is in view: `frames` cut into `n` non-empty runs at random points."""
    cuts = sorted(rng.sample(range(1, frames), n - 1))
    return tuple(sum(f >= c for c in cuts) for f in range(frames))


def _next_object(look: str, previous: scenes.SceneObject | None, size: int, rng: random.Random) -> scenes.SceneObject:
    """A random object of `look`, of another colour than `previous` and clear of where it stood, so that
    an arrival shows even in the frame pair the model's vision sees as one patch."""
    for _ in range(100):
        (o,) = scenes.random_objects(look, 1, size, rng)
        if previous is None or (
            o.color != previous.color and math.hypot(o.x - previous.x, o.y - previous.y) > o.size + previous.size
        ):
            return o
    raise RuntimeError(f"no object apart from {previous} in a {size}px frame")


def render_clip(name: str, seed: int, frames: int = FRAMES, size: int = SIZE, counts: tuple[int, int] = COUNTS) -> Clip:
    """Row `seed` of the clip set `name`: its frames, its objects in order, and its question."""
    if name not in LOOKS:
        raise ValueError(f"unknown clip set {name!r}; choose {', '.join(LOOKS)}")
    if not 1 <= counts[0] <= counts[1] <= frames:
        raise ValueError(f"counts must be (lo, hi) with 1 <= lo <= hi <= frames ({frames}), got {counts!r}")
    look = LOOKS[name]
    rng = random.Random(f"clip|{name}|{seed}")  # str seeds hash with sha512: the same in every process
    n = rng.randint(*counts)
    question = QUESTION if name == "lab-clips" else rng.choice(TRANSFER_QUESTIONS)
    objects: list[scenes.SceneObject] = []
    for _ in range(n):
        objects.append(_next_object(look, objects[-1] if objects else None, size, rng))
    drawn = [scenes.draw_objects(look, (o,), size) for o in objects]  # a run's frames are one image
    shown = _runs(n, frames, rng)
    return Clip(name, tuple(drawn[j] for j in shown), tuple(objects), shown, question)


def _parts(objects: tuple[scenes.SceneObject, ...]) -> str:
    """ "two cubes, one sphere and three cylinders" (counts per shape, in words)."""
    from . import texts

    counts = Counter(o.shape for o in objects)
    items = [f"{texts.word(k)} {texts.PLURAL[s] if k > 1 else s}" for s in scenes.SHAPES if (k := counts[s])]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _objects(count: int) -> str:
    return "object" if count == 1 else "objects"


def verbose(clip: Clip, rng: random.Random) -> str:
    """What came, in words, no digits, ending with the total in words (`texts.parse_count_word` reads it)."""
    from . import texts

    total = rng.choice(_TOTALS).format(n=texts.word(clip.count), objects=_objects(clip.count))
    return rng.choice(_OPENINGS).format(parts=_parts(clip.objects)) + " " + total


def r1v(clip: Clip, rng: random.Random) -> str:
    """R1-V's format: reasoning in words inside <think>, the count in digits inside <answer>."""
    from ..tasks.styles import R1V
    from . import texts

    if rng.random() < 0.25:  # the project's own demonstration sentences, as guidance injection writes them
        return R1V.demonstration(clip.count, rng)
    think = rng.choice(_THINK).format(
        n=texts.word(clip.count), objects=_objects(clip.count), parts=_parts(clip.objects)
    )
    return f"<think>{think}</think><answer>{clip.count}</answer>"


def make_example(rng: random.Random, seed: int, digit_share: float, transfer_share: float, r1v_share: float) -> tuple:
    """(frames, prompt style, question, answer text) for one freshly rendered pre-training clip: the
    image bases' mix (`pretrain.Mix`), a share `transfer_share` of clips in the transfer look."""
    from ..tasks.styles import DEFAULT, R1V

    name = "lab-clips-transfer" if rng.random() < transfer_share else "lab-clips"
    clip = render_clip(name, seed)
    if rng.random() < r1v_share:
        return list(clip.frames), R1V, clip.question, r1v(clip, rng)
    answer = str(clip.count) if rng.random() < digit_share else verbose(clip, rng)
    return list(clip.frames), DEFAULT, clip.question, answer


class ClipSource:
    """Clips of one set, rendered when asked for (row i: seed i); with `frame`, that frame of each clip
    alone, as a one-frame video."""

    always_split = True  # a rendered set is a training set too: evaluate on its held-out rows only

    def __init__(self, name: str, task: Task | None = None, frame: int | None = None):
        if name not in LOOKS:
            raise ValueError(f"unknown clip set {name!r}; choose {', '.join(LOOKS)}")
        if frame is not None and not 0 <= frame < FRAMES:
            raise ValueError(f"frame must be in 0..{FRAMES - 1}, got {frame}")
        self.clips, self.task, self.frame = name, task, frame
        self.name = name if frame is None else ONE_FRAME if name == "lab-clips" else f"{name}-frame"

    def __len__(self) -> int:
        return LAB_SIZE

    def __getitem__(self, index: int) -> Sample:
        clip = render_clip(self.clips, index)
        row = f"{self.name}/{index}"
        frames = list(clip.frames) if self.frame is None else [clip.frames[self.frame]]
        question, target = clip.question, clip.count
        if self.task is not None:  # any task that reads a number: counting, numeric, short_answer
            question, target = self.task.read_sample(question, target, {}, row)
        return Sample(row, None, question, target, self.name, video=frames)


def register() -> None:
    """`lab-clips`, `lab-clips-transfer` and `lab-clips-frame` (the middle frame of each `lab-clips` row)."""
    from ..data import register_dataset

    for name in LOOKS:
        register_dataset(name, lambda images, task, name=name: ClipSource(name, task=task))
    register_dataset(ONE_FRAME, lambda images, task: ClipSource("lab-clips", task=task, frame=FRAMES // 2))
