"""A cold-start remedy of one's own, as one file: replay the policy's own earlier successes.

When a group's sampled rows all miss (no row reaches `min_reward`), one of them is replaced by the
best completion the policy sampled for the same prompt on an earlier step, if it has one. Unlike a
demonstration, the replayed row is in the policy's own words; like one, it is off-policy now (marked
injected: the loss's ratio is to today's log-probs, and the sampled-row metrics leave it out).
The idea is self-imitation learning (Oh et al. 2018, arXiv:1806.05635) carried to GRPO groups.

Use it by import path, or register it from a plug-in and name it:

    vlm-grpo train configs/lab.yaml remedies=[replay_remedy:SelfReplay] replay.min_reward=1

Its options are a dataclass it declares (`ReplayOptions`): the config's `replay` section, checked with
the rest of the config before anything loads.

Each process keeps the successes of the prompts it sampled (a sketch: no exchange between processes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlm_grpo.guidance import PolicyOps, Remedy, Row, StepContext, replace_rows
from vlm_grpo.rollout import Rollout


@dataclass
class ReplayOptions:
    min_reward: float = 1.0
    """A sampled row is kept for replay when its reward reaches this."""

    def check(self, cfg, need) -> None:
        need(-1 <= self.min_reward <= 1, f"replay.min_reward={self.min_reward} must be in [-1, 1]")


class SelfReplay(Remedy):
    name, options = "replay", ReplayOptions

    def __init__(self, cfg, kit):
        super().__init__(cfg, kit)
        self.min_reward = self.settings.min_reward
        self.best: dict[str, tuple[float, list[int], str]] = {}  # sample id -> (reward, tokens, text)
        self.replayed = 0

    def after_draw(self, rollout: Rollout, context: StepContext, ops: PolicyOps) -> Rollout:
        G, rewards = rollout.group_size, rollout.rewards.tolist()
        rows: dict[int, Row] = {}
        for group, sample in enumerate(rollout.prompts.samples):
            span = range(group * G, (group + 1) * G)
            sampled = [row for row in span if not rollout.injected[row]]
            if not sampled:
                continue
            top = max(sampled, key=lambda row: rewards[row])
            if rewards[top] >= self.min_reward and rewards[top] > self.best.get(sample.id, (float("-inf"),))[0]:
                length = int(rollout.completion_mask[top].sum())
                self.best[sample.id] = (rewards[top], rollout.completion_ids[top, :length].tolist(), rollout.texts[top])
            elif rewards[top] < self.min_reward and sample.id in self.best:
                _, tokens, text = self.best[sample.id]
                rows[sampled[-1]] = Row(tokens, len(tokens), False, text)
        if context.first:
            self.replayed = len(rows)
        return replace_rows(rollout, rows, self.kit.scorer, self.kit.pad_id) if rows else rollout

    def metrics(self, rollout: Rollout, advantages: torch.Tensor, stats, ops: PolicyOps) -> dict:
        return {"replay/rows": ops.world.sum(float(self.replayed)), "replay/prompts_kept": len(self.best)}

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = dict(state["best"])
