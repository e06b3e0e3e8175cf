"""The trainer's side of its rollout engine: building it, sampling (one step ahead with
`overlap_rollout`), giving it new weights at the end of each step, and measuring how far its
sampling policy is from the trainer's (the truncated importance weights that correct for it).

The trainer asks this module for completions and never which engine produced them; only an engine
whose log-probs are its own (`own_logprobs`: vLLM's kernels, precision, or weights a step old)
adds the `engine/*` metrics and the weights.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..core import algo
from ..guidance import StepContext
from ..rollout import Completions, Engine, PromptBatch, Rollout, SamplingParams, make_engine
from ..rollout.engines import check_processes
from ..rollout.engines.base import EngineOptions


def build_engine(cfg: TrainConfig, model, processor, context, numerics, workdir, world=None, gather=None) -> Engine:
    """The configured engine around the loaded policy (`context`: the trainer's gather and autocast;
    `numerics`: its precision policy, whose compute dtype an engine with weights of its own takes;
    `world`: the trainer's processes, None for one; `gather`: its gather alone, where reading the weights
    needs it)."""
    compute = numerics.compute or numerics.weights
    dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[compute]
    settings = cfg.sections.get(cfg.rollout_engine)  # the engine's own section, if it has one
    options = EngineOptions(cfg.generation_sharing, context, settings, dtype, workdir, cfg.seed, world, gather)
    check_processes(cfg.rollout_engine, world.size if world is not None else 1)
    return make_engine(cfg.rollout_engine, model, processor, options)


@dataclass
class Drawn:
    """One batch of prompts and what the engine sampled for them."""

    prompts: PromptBatch
    completions: Completions
    staleness: int
    """Optimizer steps between the weights that sampled and the weights that train (0 or 1)."""
    wait_s: float
    """Seconds the trainer waited for these completions."""


@dataclass
class Draw:
    """One draw of phases 1-2."""

    rollout: Rollout
    """The rollout as the remedies left it (guidance injection has made some rows demonstrations)."""
    sampled_metrics: dict
    """Its sampled rows' metrics, before any remedy."""
    context: StepContext
    """Where the draw sits: step and the global sampled answer-present rate."""
    drawn: Drawn
    """What the rollout engine returned (prompts, completions, staleness, wait)."""


class EngineRollouts:
    """Sampling through the engine for the trainer, with the optional one-step-ahead prefetch."""

    def __init__(self, cfg: TrainConfig, engine: Engine):
        self.engine, self.overlap = engine, cfg.overlap_rollout
        self.params = SamplingParams(
            cfg.num_generations, cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k
        )
        asked = cfg.vllm_importance_sampling_correction
        self.correct = engine.own_logprobs if asked is None else asked and engine.own_logprobs
        self.mode = cfg.vllm_importance_sampling_mode
        self.bounds = (cfg.vllm_importance_sampling_clip_min, cfg.vllm_importance_sampling_clip_max)
        self.pending: tuple[PromptBatch, Future] | None = None
        self.last_sync_s = 0.0

    def draw(self, next_prompts, ahead: bool) -> Drawn:
        """The next batch: the prefetched one if any, else sampled now; with `ahead` (and overlap on),
        the batch after it starts sampling before this one trains."""
        t0 = time.perf_counter()
        if self.pending is not None:
            prompts, future = self.pending
            self.pending, staleness = None, 1
            completions = future.result()
        else:
            prompts, staleness = next_prompts(), 0
            completions = self.engine.sample(prompts, self.params)
        wait = time.perf_counter() - t0
        if self.overlap and ahead:
            upcoming = next_prompts()
            self.pending = (upcoming, self.engine.submit(upcoming, self.params))
        return Drawn(prompts, completions, staleness, wait)

    def sync(self, model) -> float:
        """At the end of a step's update: the engine samples from the new weights (after any prefetch).
        Returns the seconds the push took."""
        self.last_sync_s = self.engine.update_weights(model)
        return self.last_sync_s

    def abandon(self) -> None:
        """The engine failed: a prefetch from it is gone with it."""
        self.pending = None

    def is_weights(self, rollout: Rollout, trainer_logp: torch.Tensor | None) -> torch.Tensor | None:  # (N, C)
        if not self.correct or rollout.engine_logp is None or trainer_logp is None:
            return None
        mask = sampled_tokens(rollout).to(trainer_logp.device)
        engine_logp = rollout.engine_logp.to(trainer_logp.device)
        return algo.engine_is_weights(trainer_logp, engine_logp, mask, self.mode, *self.bounds)

    def metrics(self, rollout: Rollout, trainer_logp: torch.Tensor | None, drawn: Drawn) -> dict:
        if not self.engine.own_logprobs or rollout.engine_logp is None or trainer_logp is None:
            return {}
        mask = sampled_tokens(rollout).to(trainer_logp.device)
        engine_logp = rollout.engine_logp.to(trainer_logp.device)
        gap = algo.logprob_mismatch(trainer_logp, engine_logp, mask)
        return {
            "engine/logp_gap_mean": gap["logp_gap_mean"],
            "engine/logp_gap_max": gap["logp_gap_max"],
            "engine/kl": gap["kl"],
            **self.ratio_metrics(trainer_logp, engine_logp, mask),
            "engine/staleness": float(drawn.staleness),
            "engine/wait_s": drawn.wait_s,
            "engine/weight_sync_s": self.last_sync_s,
        }

    def ratio_metrics(self, trainer_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> dict:
        """The raw ratios at the mode's level (before truncation or masking: how far off the samples are),
        and what each mode's weights would change (`mode_shares`)."""
        level = self.mode.split("_")[0]
        ratio = algo.engine_is_ratios(trainer_logp, engine_logp, mask, level)
        counted = mask.bool() if level == "token" else mask.bool().any(1, keepdim=True)
        if not bool(counted.any()):
            return {}
        raw = ratio[counted]
        quantiles = torch.quantile(raw.float(), torch.tensor([0.01, 0.5, 0.99], device=raw.device)).tolist()
        return {
            "engine/is_ratio_min": float(raw.min()),
            "engine/is_ratio_p01": quantiles[0],
            "engine/is_ratio_p50": quantiles[1],
            "engine/is_ratio_p99": quantiles[2],
            "engine/is_ratio_max": float(raw.max()),
            "engine/is_ratio_mean": float(raw.mean()),
            **self.mode_shares(trainer_logp, engine_logp, mask),
        }

    def mode_shares(self, trainer_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> dict:
        """What each of the four modes would do to these samples at the run's bounds, whichever mode the run
        uses (`engine/is_changed/<mode>`), and the spread of the rows' sequence ratios: one run compares them."""
        shares = algo.engine_is_changed_shares(trainer_logp, engine_logp, mask, *self.bounds)
        rows = mask.bool().any(1)
        sequence = algo.engine_is_ratios(trainer_logp, engine_logp, mask, "sequence")[rows]
        return {
            **{f"engine/is_changed/{mode}": share for mode, share in shares.items()},
            "engine/is_seq_ratio_min": float(sequence.min()),
            "engine/is_seq_ratio_max": float(sequence.max()),
        }

    def close(self) -> None:
        if self.pending is not None:
            self.pending[1].cancel()
            self.pending = None
        self.engine.close()


def sampled_tokens(rollout: Rollout) -> torch.Tensor:  # (N, C)
    """Tokens the engine sampled: the completion mask of rows that were not injected (a prefix row's
    continuation came from another call and carries no engine log-probs)."""
    return rollout.completion_mask * (~rollout.injected).to(rollout.completion_mask.device).unsqueeze(1)
