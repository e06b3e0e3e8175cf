"""The lab's data sets: scenes rendered on demand, row i being the scene of seed i.

`lab-clevr` and `lab-superclevr` ask for the count (task `counting`); `lab-clevr-mc` and
`lab-superclevr-mc` ask the same scenes as multiple choice (task `multiple_choice`): four counts
near the true one, in increasing order, answered by a letter -- a format the lab's bases never saw
in pre-training.
"""

from __future__ import annotations

import random

from ..data import Sample
from ..tasks import Task
from ..tasks.multiple_choice import MultipleChoiceTask
from . import scenes

LAB_SIZE = 1_000_000  # nominal rows of a rendered lab set
MC_CHOICES = 4
MC_SUFFIX = "-mc"


class LabSource:
    """Scenes of the counting lab, rendered when asked for."""

    always_split = True  # a rendered set is a training set too: evaluate on its held-out rows only

    def __init__(self, domain: str, size: int = 112, task: Task | None = None, multiple_choice: bool = False):
        if domain not in scenes.DOMAINS:
            raise ValueError(f"unknown lab domain {domain!r}; choose {', '.join(scenes.DOMAINS)}")
        self.domain, self.size, self.task = domain, size, task
        self.name = domain + (MC_SUFFIX if multiple_choice else "")
        if multiple_choice and not isinstance(task, MultipleChoiceTask):
            raise ValueError(f"{self.name} asks multiple-choice questions: set task=multiple_choice")

    def __len__(self) -> int:
        return LAB_SIZE

    def __getitem__(self, index: int) -> Sample:
        image, scene = scenes.render_scene(self.domain, index, size=self.size)
        row = f"{self.name}/{index}"
        if self.name == self.domain and self.task is None:
            return Sample(row, image, scene.question, scene.count, self.domain)
        if self.name == self.domain:  # any task that reads a number: counting, numeric, short_answer
            question, target = self.task.read_sample(scene.question, scene.count, {}, row)
        else:
            options = count_choices(scene.count, random.Random(row))
            question, target = self.task.read_sample(scene.question, str(scene.count), {"choices": options}, row)
        return Sample(row, image, question, target, self.domain)


def count_choices(count: int, rng: random.Random, k: int = MC_CHOICES) -> list[str]:
    """`k` counts in increasing order: the true one and distinct distractors within 3 of it (all >= 1)."""
    near = [c for c in range(max(1, count - 3), count + 4) if c != count]
    return [str(c) for c in sorted([count, *rng.sample(near, k - 1)])]
