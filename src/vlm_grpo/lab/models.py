"""The counting lab's shipped base models, registered by name with `vlm_grpo.models`.

- ``lab-base``: the study's mild cold start (about 15 % of sampled plain-prompt answers hold a digit);
- ``lab-base-cold``: a severe one (about 2-3 %).

Both are tiny Qwen2-VL models pre-trained by `vlm_grpo.lab.pretrain` and saved as standard HF
folders under ``weights/`` (see ``weights/MEASUREMENTS.md`` for how they were made and measured).
A name is registered only when its folder is present, so a trimmed install still imports cleanly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASES = ("lab-base", "lab-base-cold")


def path_of(name: str) -> Path:
    """The shipped folder of a lab base model."""
    if name not in BASES:
        raise ValueError(f"unknown lab base {name!r}; choose {', '.join(BASES)}")
    return WEIGHTS_DIR / name


def register(register_model: Callable[[str, Callable[[], object]], None]) -> None:
    """Register every shipped base whose folder holds a saved model (the factory returns its path)."""
    for name in BASES:
        folder = path_of(name)
        if (folder / "config.json").is_file():
            register_model(name, lambda folder=folder: str(folder))
