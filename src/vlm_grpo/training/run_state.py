"""What a checkpoint saves of a run and restores into it: the run's stateful parts as one typed value
(`RunState`, built once by the trainer), and how far the run has come (`Progress`, returned by a
resume and passed to each save)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..data import PromptStream
from ..guidance import Remedy
from .distributed.strategies import Replicated
from .distributed.world import World


@dataclass(frozen=True)
class RunState:
    """The objects whose state a checkpoint holds, and what it needs to write them. The objects change
    as the run trains (weights, moments, schedule, stream position); which objects they are does not."""

    cfg: TrainConfig
    """The run's configuration as the trainer resolved it (written beside the weights as config.yaml)."""
    out: Path
    """The output folder: checkpoint-<step>/ folders are written here and the newest is resumed."""
    world: World
    """This process and its peers: saving gathers every rank's RNG; only rank 0 writes."""
    strategy: Replicated
    """How the policy is spread over processes (`distributed/strategies.py`): it gathers sharded weights
    and optimizer state for a save and restores them on resume."""
    model: torch.nn.Module
    """The policy being trained (saved in HF format, merged with its LoRA adapters when asked)."""
    processor: Any
    """The policy's processor (tokenizer and image processor), saved beside the weights."""
    optimizer: torch.optim.Optimizer
    """The optimizer as the strategy wraps it (its moments are part of the trainer state)."""
    scheduler: torch.optim.lr_scheduler.LRScheduler
    """The learning-rate schedule over optimizer updates."""
    stream: PromptStream
    """The training prompts' resumable order: epoch, position and skipped rows."""
    remedies: list[Remedy]
    """The run's remedies; each one's `state_dict` is saved under its name."""
    reproduce: str | None
    """How the model card says to run this again (None: the `vlm-grpo train` command)."""


@dataclass(frozen=True)
class Progress:
    """How far a run has come, beside the states of its objects."""

    step: int
    """Steps trained (0: none; a resume with no checkpoint starts there)."""
    skipped_updates: int = 0
    """Optimizer updates skipped so far for a non-finite loss or gradient (`optim/skipped_steps`)."""
