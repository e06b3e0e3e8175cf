"""The fixed held-out split, the resumable training prompt stream and evaluation samples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from ..errors import BadSample
from .samples import Sample, Source
from .videos import FrameSampling

SPLIT_SEED = 20250114  # fixed, independent of the run seed, so every run holds out the same rows


def split_indices(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices: a fixed permutation, the first `holdout` rows held out."""
    holdout = min(holdout, n // 2)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


class PromptStream:
    """Training prompts in a seeded order, epoch after epoch; its state resumes exactly."""

    def __init__(
        self,
        source: Source,
        indices: np.ndarray,
        seed: int,
        on_bad_sample: str = "skip",
        log: Callable[[str], None] = print,
        check: Callable[[Sample], None] | None = None,
        prepare: Callable[[Image.Image], Image.Image] | None = None,
        frames: FrameSampling | None = None,
    ):
        if len(indices) == 0:
            raise ValueError(f"{source.name}: no training rows left after the held-out split")
        self.source, self.indices, self.seed = source, indices, seed
        self.on_bad_sample, self.log, self.check, self.prepare = on_bad_sample, log, check, prepare
        self.frames = frames  # how a sample's video becomes frames (the model's settings); None: not decoded here
        self.epoch, self.position, self.skipped = 0, 0, 0
        self.bad: set[int] = set()  # rows found unusable: logged and counted once, then passed over
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))

    def next_batch(self, count: int) -> list[Sample]:
        batch: list[Sample] = []
        while len(batch) < count:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            index = int(self.indices[self._order[self.position]])
            self.position += 1
            if index in self.bad:
                continue
            try:
                sample = self.source[index]
                sample = sample.with_decoded_images(self.prepare, self.frames)
                if self.check is not None:
                    self.check(sample)
            except BadSample as exc:
                if self.on_bad_sample == "error":
                    raise
                self.skipped += 1
                self.bad.add(index)
                self.log(f"skipping bad sample: {exc}")
                if len(self.bad) == len(self.indices):
                    raise ValueError(f"{self.source.name}: no usable rows (every row was skipped)") from exc
                continue
            batch.append(sample)
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped, "bad": sorted(self.bad)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state["skipped"]
        self.bad = set(state.get("bad", ()))
        self._order = self._permutation()


def eval_samples(source: Source, indices: np.ndarray, count: int) -> list[Sample]:
    """The first `count` usable held-out samples, in a fixed order (images decoded lazily later)."""
    chosen: list[Sample] = []
    for index in indices:
        if len(chosen) == count:
            break
        try:
            chosen.append(source[int(index)])
        except BadSample:
            continue
    return chosen
