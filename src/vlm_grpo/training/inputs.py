"""What a Python caller hands a run instead of naming it in the configuration.

The command line names everything in `TrainConfig` (model, data set, rewards by name); the Python
API (`vlm_grpo.api`) may pass objects: a loaded model and processor, rows held in memory, reward
callables, callbacks. The trainer takes them through this one bundle, so its loop is the same for
both; every field left at its default means "as the configuration says".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data import Source
from .heldout import HeldOutSets


@dataclass
class RunInputs:
    model: Any = None
    """A model to train as is (None: load `cfg.model`)."""
    processor: Any = None
    """Its processor (None: the loaded model's own)."""
    train: Source | None = None
    """The training rows (None: open `cfg.data.train`)."""
    eval_sets: HeldOutSets | None = None
    """The held-out sets to evaluate (None: those `cfg.data.eval` names)."""
    rewards: list[Any] | None = None
    """Reward names and TRL-shaped callables, in `cfg.reward_weights`' order (None: `cfg.reward_funcs`)."""
    callbacks: list[Callable[[int, dict], None]] = field(default_factory=list)
    """Called after every step, on every process, with the step number and its metrics."""
    reproduce: str | None = None
    """How the model card says to run this again (None: the `vlm-grpo train` command)."""
