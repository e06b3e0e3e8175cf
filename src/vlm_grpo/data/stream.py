"""The fixed held-out split, the resumable training prompt stream and evaluation samples."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from ..errors import BadSample
from .prefetch import Prefetch
from .samples import Sample, Source
from .videos import FrameSampling

Timed = Callable[[str], contextlib.AbstractContextManager]  # a phase's name -> a context that times it
SPLIT_SEED = 20250114  # fixed, independent of the run seed, so every run holds out the same rows


def split_indices(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices: a fixed permutation, the first `holdout` rows held out."""
    holdout = min(holdout, n // 2)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


class PromptStream:
    """Training prompts in a seeded order, epoch after epoch; its state resumes exactly. With `num_workers`
    threads, the rows after each batch are decoded while the step runs (`prefetch.py`): the same rows, in
    the same order, as with none."""

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
        num_workers: int = 0,
    ):
        if len(indices) == 0:
            raise ValueError(f"{source.name}: no training rows left after the held-out split")
        self.source, self.indices, self.seed = source, indices, seed
        self.on_bad_sample, self.log, self.check, self.prepare = on_bad_sample, log, check, prepare
        self.frames = frames  # how a sample's video becomes frames (the model's settings); None: not decoded here
        self.epoch, self.position, self.skipped = 0, 0, 0
        self.bad: set[int] = set()  # rows found unusable: logged and counted once, then passed over
        self._order = self._permutation(self.epoch)
        self.prefetch: Prefetch[Sample] = Prefetch(self._decode, num_workers)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))

    def _decode(self, index: int) -> Sample:
        """Row `index` with its images loaded (and prepared) and its video decoded to frames."""
        return self.source[index].with_decoded_images(self.prepare, self.frames)

    def next_batch(self, count: int, timed: Timed | None = None) -> list[Sample]:
        """The next `count` usable samples, decoded; `timed(phase)` times the wait for decoding (`decode`),
        where the run's step clock is given it."""
        timed = timed or _untimed
        batch: list[Sample] = []
        while len(batch) < count:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            key, index = (self.epoch, self.position), int(self.indices[self._order[self.position]])
            self.position += 1
            if index in self.bad:
                continue
            try:
                with timed("decode"):
                    sample = self.prefetch.take(key, index)
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
        self.prefetch.queue(self._upcoming(count))  # the next batch of the same size, decoded meanwhile
        return batch

    def _upcoming(self, count: int) -> list[tuple[tuple[int, int], int]]:
        """Where the next `count` rows not known to be bad sit in the order, and their indices."""
        if self.prefetch.workers <= 0:
            return []
        epoch, position, order, upcoming = self.epoch, self.position, self._order, []
        while len(upcoming) < count:
            if position == len(order):
                epoch, position = epoch + 1, 0
                order = self._permutation(epoch)
            index = int(self.indices[order[position]])
            if index not in self.bad:
                upcoming.append(((epoch, position), index))
            position += 1
        return upcoming

    def close(self) -> None:
        """Stop the decoding workers, if any."""
        self.prefetch.close()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped, "bad": sorted(self.bad)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state["skipped"]
        self.bad = set(state.get("bad", ()))
        self._order = self._permutation(self.epoch)
        self.prefetch.clear()


def _untimed(phase: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


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
