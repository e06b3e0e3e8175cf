"""The lab's data sets: scenes rendered on demand, row i being the scene of seed i."""

from __future__ import annotations

from ..data import Sample
from . import scenes

LAB_SIZE = 1_000_000  # nominal rows of a rendered lab set


class LabSource:
    """Scenes of the counting lab, rendered when asked for."""

    always_split = True  # a rendered set is a training set too: evaluate on its held-out rows only

    def __init__(self, domain: str, size: int = 112):
        if domain not in scenes.DOMAINS:
            raise ValueError(f"unknown lab domain {domain!r}; choose {', '.join(scenes.DOMAINS)}")
        self.name, self.domain, self.size = domain, domain, size

    def __len__(self) -> int:
        return LAB_SIZE

    def __getitem__(self, index: int) -> Sample:
        image, scene = scenes.render_scene(self.domain, index, size=self.size)
        return Sample(f"{self.domain}/{index}", image, scene.question, scene.count, self.domain)
