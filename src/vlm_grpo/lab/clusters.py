"""Scenes that need a tool: a counting scene shrunk into one cell of a large empty floor.

`lab-clevr-cluster` draws a `lab-clevr` scene at CELL pixels into one of GRID x GRID cells of a
canvas GRID * CELL pixels wide, on the same floor. The lab's models see at most 112 x 112 pixels,
so the whole canvas reaches them at 1 / GRID of the cell's scale and its objects are a few pixels
wide; a `crop` of the cell reaches them at the scale their pre-training used. Each sample carries
the call that finds the cell (`Sample.calls`), which a demonstration makes before it answers.
`lab-superclevr-cluster` is the same in the transfer domain.
"""

from __future__ import annotations

import random

from PIL import Image

from ..data import Sample
from . import scenes
from .sources import LAB_SIZE

GRID = 2
CELL = 224
SUFFIX = "-cluster"
LOCATE_QUESTION = "Which part of the image holds the objects? Crop it."
"""The lab's grounding question: the one setting in which `lab-base-tools` learnt to call `crop`."""


def render_cluster(
    domain: str, seed: int, grid: int = GRID, cell: int = CELL
) -> tuple[Image.Image, scenes.Scene, list]:
    """(canvas, the scene drawn in its cell, the cell's box [x1, y1, x2, y2] relative to the canvas)."""
    image, scene = scenes.render_scene(domain, seed, size=cell)
    rng = random.Random(f"cluster|{domain}|{seed}")
    column, row = rng.randrange(grid), rng.randrange(grid)
    floor = scenes.render_scene(domain, seed, size=grid * cell, counts=(0, 0))[0]
    floor.paste(image, (column * cell, row * cell))
    box = [column / grid, row / grid, (column + 1) / grid, (row + 1) / grid]
    return floor, scene, box


class ClusterSource:
    """Cluster scenes of one lab domain, rendered when asked for (row i: seed i)."""

    always_split = True

    def __init__(self, domain: str, grid: int = GRID, cell: int = CELL):
        if domain not in scenes.DOMAINS:
            raise ValueError(f"unknown lab domain {domain!r}; choose {', '.join(scenes.DOMAINS)}")
        self.domain, self.grid, self.cell, self.name = domain, grid, cell, domain + SUFFIX

    def __len__(self) -> int:
        return LAB_SIZE

    def __getitem__(self, index: int) -> Sample:
        image, scene, box = render_cluster(self.domain, index, self.grid, self.cell)
        return Sample(f"{self.name}/{index}", image, scene.question, scene.count, self.name, (crop_call(box),))


def crop_call(box: list) -> dict:
    """The call that shows the cell at `box`: what a demonstration writes before it answers."""
    return {"name": "crop", "arguments": {"box": box}}
