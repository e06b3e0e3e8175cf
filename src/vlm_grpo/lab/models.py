"""The counting lab's shipped base models, registered by name (see `register` in this package).

- ``lab-base``: the study's mild cold start (about 15 % of sampled plain-prompt answers hold a digit);
- ``lab-base-cold``: a severe one (about 2-3 %);
- ``lab-base-tools``: the tool-use cold start: ``lab-base`` trained on, where it learnt to write a
  `crop` call when asked where a scene's objects are, but answers counting questions without one;
- ``lab-teacher``: ``lab-base-cold`` trained on with bare digits as every plain-prompt answer: no cold
  start, it answers in the reward's format and counts; a distillation teacher (``distill.teacher``)
  with the cold bases' tokenizer.
- ``lab-base-video``: ``lab-base-cold`` trained on the lab's clips (`vlm_grpo.lab.clips`) with its mix:
  the severe cold start on video (plain-prompt answers verbose, the count in words), R1-V's format
  under its prompt; its chat template holds the video placeholder.

All are tiny Qwen2-VL models pre-trained by `vlm_grpo.lab.pretrain` and saved as standard HF
folders under ``weights/`` (see ``weights/MEASUREMENTS.md`` for how they were made and measured).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BASES = ("lab-base", "lab-base-cold", "lab-base-tools", "lab-teacher", "lab-base-video")


def path_of(name: str) -> Path:
    """The shipped folder of a lab base model."""
    if name not in BASES:
        raise ValueError(f"unknown lab base {name!r}; choose {', '.join(BASES)}")
    return WEIGHTS_DIR / name


def factory(name: str) -> Callable[[], str]:
    """The registered factory: the folder to load, or a one-line error when it was never built."""

    def folder() -> str:
        path = path_of(name)
        if not (path / "config.json").is_file():
            raise ValueError(
                f"lab model {name!r} is not built yet: no saved model under {path} "
                "(the counting lab pre-trains it: python -m vlm_grpo.lab.pretrain)"
            )
        return str(path)

    return folder
