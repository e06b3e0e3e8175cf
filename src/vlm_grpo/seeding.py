"""Saving and restoring Python RNG state through checkpoints (torch.save keeps its tuples as lists)."""

from __future__ import annotations

import random


def restore_python_rng(rng: random.Random | None, saved) -> None:
    """Put a `getstate()` result read back from a checkpoint into `rng` (None: the global RNG)."""
    version, internal, gauss = saved
    (rng or random).setstate((version, tuple(internal), gauss))


class SeededRng:
    """A part with a generator of its own (`self.rng`, seeded by the part), saved in checkpoints: so
    resuming continues its draws where they were."""

    rng: random.Random

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        restore_python_rng(self.rng, state["rng"])
