"""Dynamic sampling (DAPO, arXiv:2503.14476): train only on groups whose rewards differ.

A group whose G rewards are all equal has zero advantage everywhere and teaches nothing. With
`dynamic_sampling.enabled=true` the step draws further prompt batches (each sampled, scored and
injected as usual) until it holds `prompts_per_step` groups with differing rewards, or until
`dynamic_sampling.max_batches` draws are spent; a step still short is filled with groups without
signal, in draw order, and counted (`sampling/short_steps`). Kept groups are taken in draw order.
With several processes every rank draws the same number of batches (a draw is a collective) and
keeps its own share of the global batch, so the global batch always holds `prompts_per_step` groups.

Departure from DAPO: the filter looks at rewards after guidance injection, so it composes with
every injection mode (an injected group has differing rewards by construction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import TrainConfig
from ..rollout import PromptBatch, Rollout, take_groups
from .remedy import PolicyOps, Remedy, register_remedy


@dataclass
class DynamicSamplingConfig:
    """The `dynamic_sampling` section (DAPO's dynamic sampling)."""

    enabled: bool = False
    """Draw further prompt batches until the step holds prompts_per_step groups whose rewards differ (after
    injection), or max_batches draws are spent."""
    max_batches: int = 4
    """Most prompt batches one step draws; a step still short trains on what it has, filled with groups
    without signal, and counts it in `sampling/short_steps`."""

    def check(self, cfg: TrainConfig, need) -> None:
        need(self.max_batches >= 1, f"dynamic_sampling.max_batches={self.max_batches} must be >= 1")


def has_signal(rollout: Rollout) -> list[bool]:
    """Per group: its rewards are not all equal."""
    grouped = rollout.rewards.view(-1, rollout.group_size)
    return (grouped.max(1).values != grouped.min(1).values).tolist()


def collect(
    first: Rollout,
    draw: Callable[[], Rollout],
    max_batches: int,
    any_rank_short: Callable[[bool], bool],  # True while any process still lacks groups (a collective)
    encode: Callable[[list], PromptBatch],
    pad_id: int,
) -> tuple[Rollout, dict]:
    """The step's rollout of groups with signal, and its sampling metrics."""
    needed = len(first.prompts.samples)
    kept: list[tuple[Rollout, int]] = []
    spare: list[tuple[Rollout, int]] = []
    rollout, drawn = first, 1
    while True:
        for group, signal in enumerate(has_signal(rollout)):
            (kept if signal else spare).append((rollout, group))
        if not any_rank_short(len(kept) < needed) or drawn >= max_batches:
            break
        rollout, drawn = draw(), drawn + 1
    short = len(kept) < needed
    picks = (kept + spare)[:needed]
    metrics = {
        "sampling/batches_drawn": drawn,
        "sampling/groups_discarded": drawn * needed - needed,
        "sampling/groups_without_signal": len(spare),
        "sampling/short_steps": float(short),
    }
    if all(r is first for r, _ in picks) and [g for _, g in picks] == list(range(needed)):
        return first, metrics  # the first draw as it was: nothing to re-encode
    samples = [r.prompts.samples[g] for r, g in picks]
    return take_groups(picks, encode(samples), pad_id), metrics


@register_remedy
class DynamicSampling(Remedy):
    """`dynamic_sampling.enabled=true`: the step draws again until its groups hold signal."""

    name, order, options = "dynamic_sampling", 20, DynamicSamplingConfig

    @classmethod
    def wanted(cls, cfg: TrainConfig) -> bool:
        return cfg.dynamic_sampling.enabled

    def regroup(self, rollout: Rollout, redraw: Callable[[], Rollout], ops: PolicyOps) -> tuple[Rollout, dict]:
        return collect(
            rollout,
            redraw,
            self.settings.max_batches,
            lambda short: ops.world.sum(float(short)) > 0,
            ops.encode,
            self.kit.pad_id,
        )
