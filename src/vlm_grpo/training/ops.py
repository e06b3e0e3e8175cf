"""The trainer's side of the remedy seam: the policy operations a remedy may ask for (`PolicyOps`,
built over the trainer's model, optimizer and engine), and whole-rollout log-probs."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..guidance import PolicyOps
from ..rollout import Rollout, completion_logprobs, continue_prefixes, encode_prompts
from . import precision


def policy_ops(trainer) -> PolicyOps:
    """What the remedies may ask of the policy: log-probs, backward, optimizer steps, sampling."""
    cfg = trainer.cfg

    def logprobs(prompts, rows, ids, mask, group_size, temperature, turns=None):
        with precision.autocast(trainer.precision, trainer.device):
            return completion_logprobs(
                trainer.model,
                prompts,
                rows,
                ids.to(trainer.device),
                mask.to(trainer.device),
                group_size,
                temperature,
                cfg.logprob_sharing,
                turns,
                cfg.logprob_chunk_tokens,
            )

    def continue_after(prompts, rows, prefixes):
        engine, params = trainer.rollouts.engine, trainer.rollouts.params
        return continue_prefixes(engine, prompts, rows, prefixes, cfg.num_generations, params)

    def continue_conversations(prompts, owners, prefixes):
        engine, params = trainer.rollouts.engine, trainer.rollouts.params
        return engine.continue_conversations(prompts, owners, prefixes, params)

    return PolicyOps(
        world=trainer.world,
        micro_batch_size=cfg.micro_batch_size,
        logprobs=logprobs,
        backward=trainer.parallel.backward,
        zero_grad=lambda: trainer.optimizer.zero_grad(set_to_none=True),
        optimizer_step=trainer.optimizer_step,
        continue_prefixes=continue_after,
        next_samples=lambda: trainer.world.local_slice(trainer.stream.next_batch(cfg.prompts_per_step)),
        encode=lambda samples: encode_prompts(trainer.processor, trainer.style, samples, trainer.device),
        continue_conversations=continue_conversations if cfg.tools.names else None,
    )


def logprobs_all(model, rollout: Rollout, cfg: TrainConfig) -> torch.Tensor:  # (N, C), no gradient by the caller
    """Completion log-probs of every row of `rollout` under `model`, micro-batch by micro-batch, each
    run to its longest row (positions past a row's end are 0)."""
    out = None
    for rows in micro_batches(rollout, torch.arange(len(rollout.texts)), cfg):
        width = max(1, int(rollout.completion_mask[rows].sum(1).max()))  # a pass runs to its longest row
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
