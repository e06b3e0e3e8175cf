"""The trainer's side of the remedy seam: the policy operations a remedy may ask for (`PolicyOps`,
built over the run state, the optimizer step and the engine, never the trainer), the guarded
optimizer step itself (`OptimizerStep`), the context the engine samples in, and the log-probs a
step batch fixes once (rollout-time over the first epoch's passes, reference over the whole rollout)."""

from __future__ import annotations

import contextlib
import math

import torch

from ..config import TrainConfig
from ..guidance import PolicyOps
from ..rollout import Rollout, completion_logprobs, continue_prefixes, encode_prompts
from ..tasks.styles import PromptStyle
from . import precision
from .distributed.strategies import Replicated
from .engine import EngineRollouts
from .metrics import PhaseClock
from .run_state import Progress, RunState
from .setup import Policy

MAX_NONFINITE_IN_A_ROW = 5


class OptimizerStep:
    """One optimizer update of the run's model through its distribution strategy: clip, step,
    schedule. A non-finite loss or gradient skips the update and is counted (`skipped`, which
    checkpoints keep); that many in a row mean the run has diverged, and it stops."""

    def __init__(self, run: RunState):
        self.run = run
        self.skipped = self.in_a_row = 0

    def resume(self, progress: Progress) -> None:
        """Go on counting from a checkpoint's count."""
        self.skipped = progress.skipped_updates

    def zero_grad(self) -> None:
        self.run.optimizer.zero_grad(set_to_none=True)

    def __call__(self) -> float:
        """The update; returns the gradient norm (nan for a skipped update)."""
        run = self.run
        norm = run.strategy.step(run.model, run.optimizer, run.cfg.max_grad_norm)
        if not math.isfinite(norm):
            self.skipped += 1
            self.in_a_row += 1
            if self.in_a_row >= MAX_NONFINITE_IN_A_ROW:
                raise FloatingPointError(
                    f"{self.in_a_row} updates in a row had a non-finite loss or gradient; "
                    f"stopping. The last good checkpoint in {run.out} is kept: lower learning_rate and resume."
                )
            return float("nan")
        self.in_a_row = 0
        run.scheduler.step()
        return norm


def sampling_context(strategy: Replicated, model, numerics: precision.Policy, device: torch.device):
    """What an engine that samples with the policy itself enters around sampling: the weights gathered
    (ranks decode for different numbers of steps, and gathering is a collective) and the run's autocast."""

    @contextlib.contextmanager
    def context():
        with strategy.gathered(model), precision.autocast(numerics, device):
            yield

    return context


def policy_ops(
    run: RunState,
    rollouts: EngineRollouts,
    optimizer_step: OptimizerStep,
    style: PromptStyle,
    numerics: precision.Policy,
    device: torch.device,
    clock: PhaseClock,
) -> PolicyOps:
    """What the remedies (and the trainer's own phases) may ask of the run's policy: log-probs under
    `numerics`' autocast on `device`, backward through its strategy, `optimizer_step`, the stream's
    next prompts in `style` (timed by `clock` as the data and encoding phases), sampling through
    `rollouts`' engine, a teacher's log-probs (the `teacher` phase)."""
    cfg, model, world = run.cfg, run.model, run.world

    def logprobs(prompts, rows, ids, mask, group_size, temperature, turns=None):
        with precision.autocast(numerics, device):
            return completion_logprobs(
                model,
                prompts,
                rows,
                ids.to(device),
                mask.to(device),
                group_size,
                temperature,
                cfg.logprob_sharing,
                turns,
                cfg.logprob_chunk_tokens,
            )

    def continue_after(prompts, rows, prefixes):
        return continue_prefixes(rollouts.engine, prompts, rows, prefixes, cfg.num_generations, rollouts.params)

    def continue_conversations(prompts, owners, prefixes):
        return rollouts.engine.continue_conversations(prompts, owners, prefixes, rollouts.params)

    def next_samples():
        with clock.phase("data"):  # the wait for decoding in its own phase, `decode`
            return world.local_slice(run.stream.next_batch(cfg.prompts_per_step, clock.phase))

    def encode(samples):
        with clock.phase("encode"):  # images and text through the processor, collated
            return encode_prompts(run.processor, style, samples, device)

    @torch.no_grad()
    def teacher_logprobs(teacher, rollout):
        with clock.phase("teacher"), precision.autocast(numerics, device):  # as the reference is scored
            return logprobs_all(teacher, rollout, cfg)

    return PolicyOps(
        world=world,
        micro_batch_size=cfg.micro_batch_size,
        logprobs=logprobs,
        backward=run.strategy.backward,
        zero_grad=optimizer_step.zero_grad,
        optimizer_step=optimizer_step,
        continue_prefixes=continue_after,
        next_samples=next_samples,
        encode=encode,
        continue_conversations=continue_conversations if cfg.tools.names else None,
        teacher_logprobs=teacher_logprobs,
    )


def rows_logprobs(ops: PolicyOps, rollout: Rollout, rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """(n, w) log-probs of `rows`' completions under the policy, with gradient, the pass run to its
    longest row (w)."""
    width, turns = rollout.width(rows), rollout.row_turns(rows)
    ids, mask = rollout.completion_ids[rows, :width], rollout.completion_mask[rows, :width]
    return ops.logprobs(rollout.prompts, rows, ids, mask, rollout.group_size, temperature, turns)


def training_passes(
    rollout: Rollout, advantages: torch.Tensor, minibatch: torch.Tensor, cfg: TrainConfig
) -> list[torch.Tensor]:
    """A minibatch's forward/backward passes (`micro_batches`); with `skip_zero_advantage_groups`,
    without the rows whose advantage is 0."""
    passes = micro_batches(rollout, minibatch, cfg)
    if cfg.skip_zero_advantage_groups:
        # Rows with zero advantage add exactly zero policy gradient (beta = 0): skip their passes.
        passes = [rows[advantages[rows].cpu() != 0] for rows in passes]
        passes = [rows for rows in passes if len(rows)]
    return passes


@torch.no_grad()
def first_epoch_logprobs(
    ops: PolicyOps, rollout: Rollout, advantages: torch.Tensor, minibatches: list[torch.Tensor], cfg: TrainConfig
) -> torch.Tensor:
    """(N, C) the rollout-time (old) log-probs, pass by pass as the first epoch will run them
    (`minibatches` are its minibatches): rows and widths alike, under the same autocast as the
    update, the first update's ratio is then exactly 1 in every precision, instead of 1 up to the
    rounding of another batch composition. Positions past a pass's width stay 0: they are past
    every row's end, masked out of the loss."""
    out = torch.zeros(rollout.completion_ids.shape, device=advantages.device)
    for minibatch in minibatches:
        for rows in training_passes(rollout, advantages, minibatch, cfg):
            out[rows.to(out.device), : rollout.width(rows)] = rows_logprobs(ops, rollout, rows, cfg.temperature)
    return out


@torch.no_grad()
def reference_logprobs(
    policy: Policy, rollout: Rollout, cfg: TrainConfig, numerics: precision.Policy, device: torch.device
) -> torch.Tensor | None:
    """(N, C) the reference's log-probs: the frozen copy's, or under LoRA the policy's with its
    adapters off; None for a run without a reference."""
    with precision.autocast(numerics, device):
        if policy.reference is not None:
            return logprobs_all(policy.reference, rollout, cfg)
        if policy.adapter_reference:
            with policy.model.disable_adapter():
                return logprobs_all(policy.model, rollout, cfg)
    return None


def logprobs_all(model, rollout: Rollout, cfg: TrainConfig) -> torch.Tensor:  # (N, C), no gradient by the caller
    """Completion log-probs of every row of `rollout` under `model`, micro-batch by micro-batch, each
    run to its longest row (positions past a row's end are 0)."""
    out = None
    for rows in micro_batches(rollout, torch.arange(len(rollout.texts)), cfg):
        width = rollout.width(rows)
        part = completion_logprobs(
            model,
            rollout.prompts,
            rows,
            rollout.completion_ids[rows, :width],
            rollout.completion_mask[rows, :width],
            rollout.group_size,
            cfg.temperature,
            cfg.logprob_sharing,
            rollout.row_turns(rows),
            cfg.logprob_chunk_tokens,
        )
        out = part.new_zeros(rollout.completion_ids.shape) if out is None else out
        out[rows.to(out.device), :width] = part
    return out


def micro_batches(rollout: Rollout, rows: torch.Tensor, cfg: TrainConfig) -> list[torch.Tensor]:
    """`rows` cut into forward/backward passes by `micro_batch_size` or `micro_batch_tokens`; a token
    budget counts the prompt too where the log-prob pass runs it again for every row."""
    per_row = 0 if cfg.logprob_sharing == "prefix" else rollout.prompts.inputs["input_ids"].size(1)
    return rollout.micro_batches(rows, cfg.micro_batch_size, cfg.micro_batch_tokens, per_row)
