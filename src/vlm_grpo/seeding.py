"""Saving and restoring Python RNG state through checkpoints (torch.save keeps its tuples as lists)."""

from __future__ import annotations

import random


def restore_python_rng(rng: random.Random | None, saved) -> None:
    """Put a `getstate()` result read back from a checkpoint into `rng` (None: the global RNG)."""
    version, internal, gauss = saved
    (rng or random).setstate((version, tuple(internal), gauss))
