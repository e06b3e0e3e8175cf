"""What a rollout engine is: prompts and one set of sampling parameters in, typed completions out.

Training, prefix guidance, dynamic sampling, evaluation and assessment all sample through an
`Engine`; the trainer builds one and never asks which. The `hf` engine (`hf.py`) samples with the
policy itself in the trainer's process; the `vllm` engine (`vllm_engine.py`) with vLLM in a server
process of its own, which receives the policy's weights after every optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..batch import Conversation, PromptBatch


@dataclass(frozen=True)
class SamplingParams:
    """How completions are drawn. One object for every caller, so no caller drops a setting."""

    group_size: int = 1
    """G completions per prompt."""
    max_tokens: int = 50
    """Most new tokens per completion."""
    temperature: float | None = 1.0
    """None: greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0: off."""

    @property
    def greedy(self) -> bool:
        return self.temperature is None


@dataclass
class Completions:
    """N = B*G completions, prompt-major (row n continues prompt n // G)."""

    ids: torch.Tensor
    """(N, C) token ids, right-padded with the tokenizer's pad id."""
    mask: torch.Tensor
    """(N, C) 1 up to and including the first end token."""
    truncated: torch.Tensor
    """(N,) bool: no end token within max_tokens."""
    texts: list[str]
    """Decoded completions, special tokens skipped."""
    logprobs: torch.Tensor | None = None
    """(N, C) the engine's own log-prob of each sampled token at the sampling temperature (0 past the
    end); None for an engine that samples with the trainer's own model and kernels (`hf`)."""
    turns: list | None = None
    """(N,) each row's `RowTurns` (`rollout/turns.py`) when rollouts call tools; None: one turn each."""


@dataclass
class EngineOptions:
    """What an engine factory is given besides the model and processor."""

    sharing: str = "auto"
    """hf: prefix sharing (`generation_sharing`)."""
    context: Callable | None = None
    """hf: entered around every call (the trainer's: gather sharded weights, autocast)."""
    settings: Any = None
    """The engine's own config section (`vllm`: VLLMConfig), None for an engine without one."""
    dtype: str = "float32"
    """The trainer's compute dtype, for engines that hold weights of their own."""
    workdir: Path | str | None = None
    """Where an engine writes its model folder and log (None: a temporary folder)."""
    seed: int = 0
    world: Any = None
    """The trainer's processes (`training.distributed.World`: rank, size, fsdp, zero_stage, gather), each
    building its own engine; None: one process."""
    gather: Callable | None = None
    """Entered around reading the policy's weights when they are partitioned in a way reading them does not
    undo (ZeRO-3: the trainer's gather, a collective); None: they read whole (FSDP2's shards are gathered
    tensor by tensor as they are read)."""


@dataclass(frozen=True)
class EngineTraits:
    """What an engine can do, declared when it is registered: the config's checks and the trainer ask
    these instead of naming engines."""

    separate_process: bool = False
    """It samples in another process, so `overlap_rollout` can sample the next step during an update."""
    quantized_weights: bool = True
    """It takes a policy whose base weights are 4-bit (QLoRA)."""
    several_processes: bool = True
    """It serves a run of several trainer processes."""


class EngineError(RuntimeError):
    """The engine cannot serve (it died, hung, or never became healthy): the run stops on it."""


class Engine(Protocol):
    name: str
    processor: Any
    """The policy's processor: prompts are encoded with it."""
    device: torch.device
    """Where prompts are encoded for it."""
    own_logprobs: bool
    """True when the engine's log-probs may differ from the trainer's (other kernels or weights):
    the trainer then measures the mismatch and corrects for it."""

    def sample(
        self, prompts: PromptBatch, params: SamplingParams, prefixes: list[list[int]] | None = None
    ) -> Completions:
        """G completions per prompt; with `prefixes` (one per prompt, G = 1), each continues its
        prompt after the given tokens (the returned ids exclude them)."""

    def sample_conversations(
        self, prompts: PromptBatch, conversations: list[Conversation], params: SamplingParams
    ) -> Completions:
        """One completion per conversation (G = 1): the next assistant turn after its prompt and the
        turns so far, the tools' images included (the returned ids exclude what was there)."""

    def submit(self, prompts: PromptBatch, params: SamplingParams):
        """Start `sample(prompts, params)`; returns a future whose `result()` is its Completions."""

    def evaluator(self) -> Engine:
        """The engine that evaluates during training (it may differ in how it enters the trainer's context)."""

    def update_weights(self, model) -> float:
        """Give the engine the policy's current weights; returns the seconds it took."""

    def close(self) -> None:
        """Stop the engine and everything it started."""
