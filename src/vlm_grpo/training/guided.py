"""The trainer's side of the guidance that needs the model: continuing injected prefixes, the
supervised warm-up step, and the supervised term of an update (see guidance/sft.py)."""

from __future__ import annotations

import time

import torch

from ..config import TrainConfig
from ..core.algo import LossStats
from ..guidance import prefix_ratio
from ..guidance.injection import Continue
from ..guidance.sft import DemoLogprobs, SupervisedPlan, Supervisor
from ..rollout import PromptBatch, StepBatch, completion_logprobs, continue_prefixes, encode_prompts


def prefix_guidance(trainer, prompts: PromptBatch, step: int) -> tuple[float, Continue] | None:
    """For payload `prefix`: this step's prefix share and how the policy continues chosen rows."""
    cfg = trainer.cfg
    if cfg.injection.payload != "prefix":
        return None

    def complete(rows: list[int], prefixes: list[list[int]]) -> list[tuple[list[int], bool]]:
        rollouts = trainer.rollouts
        return continue_prefixes(rollouts.engine, prompts, rows, prefixes, cfg.num_generations, rollouts.params)

    return prefix_ratio(cfg.injection, step, cfg.max_steps), complete


def demo_logprobs(trainer, prompts: PromptBatch, group_size: int) -> DemoLogprobs:
    """Log-probs of demonstrations for groups of `prompts`, at temperature 1 (a likelihood, not a ratio)."""

    def logprobs(groups: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with trainer._autocast():
            return completion_logprobs(
                trainer.model,
                prompts,
                groups * group_size,
                ids.to(trainer.device),
                mask.to(trainer.device),
                group_size,
                1.0,
                trainer.cfg.logprob_sharing,
            )

    return logprobs


def supervised_backward(trainer, batch: StepBatch, plan: SupervisedPlan, minibatch: torch.Tensor, stats: LossStats):
    """The supervised term of one minibatch: the demonstrations of its groups, weighted as planned."""
    G = batch.rollout.group_size
    groups = plan.groups_in(minibatch, G)
    tokens = trainer.world.sum(float(plan.mask[groups].sum())) / trainer.world.size
    logprobs = demo_logprobs(trainer, batch.rollout.prompts, G)
    Supervisor.backward(plan, groups, trainer.cfg.micro_batch_size, tokens, logprobs, trainer.parallel.backward, stats)


def warmup_step(trainer, began: float) -> dict:
    """One supervised warm-up step: every prompt of the batch trains on its demonstration."""
    cfg, world, t0 = trainer.cfg, trainer.world, time.time()
    samples = world.local_slice(trainer.stream.next_batch(cfg.prompts_per_step))
    prompts = encode_prompts(trainer.processor, trainer.style, samples, trainer.device)
    ids, mask = trainer.supervisor.demonstrations([s.answer for s in samples])
    everyone = torch.arange(len(samples))
    plan = SupervisedPlan(1.0, torch.ones(len(samples)), torch.zeros(len(samples), dtype=torch.bool), ids, mask)
    stats = LossStats()
    trainer.optimizer.zero_grad(set_to_none=True)
    tokens = world.sum(float(mask.sum())) / world.size
    logprobs = demo_logprobs(trainer, prompts, 1)
    Supervisor.backward(plan, everyone, cfg.micro_batch_size, tokens, logprobs, trainer.parallel.backward, stats)
    norm = trainer._optimizer_step()
    step_s = time.time() - t0
    metrics = {
        "sft/loss": stats.mean("sft_nll"),
        "sft/groups": world.sum(float(len(samples))),
        "sft/coef": 1.0,
        "optim/grad_norm": norm,
        "optim/lr": trainer.scheduler.get_last_lr()[0],
        "optim/skipped_steps": trainer.skipped_updates,
        "data/skipped": trainer.stream.skipped,
        "time/step_s": step_s,
        "time/elapsed_s": time.time() - began,
    }
    return {**world.mean_metrics(metrics), "world_size": world.size}


def scheduled_prefix(cfg: TrainConfig, step: int) -> float | None:
    """The prefix share given at `step`, or None when injected rows hold whole demonstrations."""
    return prefix_ratio(cfg.injection, step, cfg.max_steps) if cfg.injection.payload == "prefix" else None


def prefix_metrics(stats: LossStats) -> dict:
    """The update's view of tokens the policy sampled after a demonstration's prefix."""
    return {
        "policy/ratio_mean_continuation": stats.mean("ratio_continuation"),
        "policy/clip_fraction_continuation": stats.mean("clip_continuation"),
        "injection/continuation_logp_mean": stats.mean("logp_continuation"),
    }


def supervised_metrics(stats: LossStats, plan: SupervisedPlan | None, world) -> dict:
    weights = plan.weights if plan is not None else torch.zeros(0)
    gated = plan.gated if plan is not None else torch.zeros(0, dtype=torch.bool)
    return {
        "sft/loss": stats.mean("sft_nll"),
        "sft/groups": world.sum(float((weights > 0).sum())),
        "sft/gated_groups": world.sum(float(gated.sum())),
        "sft/coef": plan.coef if plan is not None else 0.0,
    }
