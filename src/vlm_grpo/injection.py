"""Guidance injection: ground-truth demonstrations mixed into GRPO groups.

The study replaces k of a group's G sampled completions with the correct answer written in the
prompt's style (k uniform in 1..G-1, never all G, so the group keeps reward variance and the
policy keeps exploring). Here the schedule gives a strength s(step) in [0, 1]:
- `random`: each group is injected with probability s, k uniform in 1..G-1 (s = 1: the study);
- `rate`:   each group is injected with probability s, k = round(s * G) (or `rows`), in 1..G-1;
- `rescue`: only groups whose sampled rows hold no positive reward (no learning signal), each with
            probability s, k uniform in 1..G-1 (or `rows`), as BREAD / Guide-GRPO do;
- schedules: `constant` (s = rate), `linear_decay` (the study's proposal: 0.8 -> 0.0 over the
  first 70 % of training), `adaptive` (1 while the sampled number-present rate of the step is
  below `adaptive_low`, 0 from `adaptive_high`, linear between: decay when format is learned).
"""

from __future__ import annotations

import random

import torch

from .config import InjectionConfig
from .prompts import PromptStyle
from .rewards import Scorer
from .rollout import Rollout


def schedule_value(cfg: InjectionConfig, step: int, max_steps: int, number_present_rate: float) -> float:
    """The injection strength s at `step` (0-based) for the configured schedule."""
    if cfg.mode == "none":
        return 0.0
    if cfg.schedule == "constant":
        return cfg.rate
    if cfg.schedule == "linear_decay":
        end = cfg.decay_fraction * max_steps
        if end <= 0 or step >= end:
            return cfg.final_rate
        progress = step / end
        return cfg.initial_rate * (1 - progress) + cfg.final_rate * progress
    if cfg.schedule == "adaptive":
        low, high = cfg.adaptive_low, cfg.adaptive_high
        if number_present_rate < low:
            return cfg.rate
        if number_present_rate >= high:
            return 0.0
        return cfg.rate * (high - number_present_rate) / (high - low)
    raise ValueError(f"unknown injection schedule {cfg.schedule!r}")


def rows_to_inject(
    cfg: InjectionConfig,
    strength: float,
    group_rewards: list[list[float]],  # B groups of G sampled rewards
    rng: random.Random,
) -> list[list[int]]:
    """For each group, the row positions to replace (never all G, never any when strength is 0)."""
    chosen: list[list[int]] = []
    for rewards in group_rewards:
        size = len(rewards)
        eligible = cfg.mode in ("random", "rate") or (cfg.mode == "rescue" and max(rewards) <= 0)
        if cfg.mode == "none" or strength <= 0 or not eligible or rng.random() >= strength:
            chosen.append([])
            continue
        if cfg.rows is not None:
            k = cfg.rows
        elif cfg.mode == "rate":
            k = round(strength * size)
        else:
            k = rng.randint(1, size - 1)
        k = min(max(k, 1), size - 1)
        chosen.append(sorted(rng.sample(range(size), k)))
    return chosen


class Injector:
    """Replaces chosen rows of a rollout with tokenised demonstrations and re-scores them."""

    def __init__(self, cfg: InjectionConfig, style: PromptStyle, tokenizer, end_id: int, pad_id: int, seed: int):
        self.cfg, self.style, self.tokenizer = cfg, style, tokenizer
        self.end_id, self.pad_id = end_id, pad_id
        self.rng = random.Random(f"injection-{seed}")

    def demonstration(self, answer: int) -> tuple[str, list[int]]:
        """Text and token ids of a demonstration; it ends with the end-of-turn token so the model learns to stop."""
        text = self.style.demonstration(answer, self.rng)
        return text, self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end_id]

    def apply(self, rollout: Rollout, scorer: Scorer, strength: float) -> Rollout:
        G = rollout.group_size
        rewards = rollout.rewards.view(-1, G).tolist()
        plan = rows_to_inject(self.cfg, strength, rewards, self.rng)
        rows = [g * G + i for g, positions in enumerate(plan) for i in positions]
        if not rows:
            return rollout
        demos = {row: self.demonstration(rollout.answer_of_row(row)) for row in rows}
        width = max(rollout.completion_ids.size(1), max(len(ids) for _, ids in demos.values()))
        ids = _pad_to(rollout.completion_ids, width, self.pad_id)
        mask = _pad_to(rollout.completion_mask, width, 0)
        truncated, injected = rollout.truncated.clone(), rollout.injected.clone()
        texts, scores = list(rollout.texts), list(rollout.scores)
        for row, (text, tokens) in demos.items():
            ids[row] = self.pad_id
            ids[row, : len(tokens)] = torch.tensor(tokens, device=ids.device)
            mask[row] = 0
            mask[row, : len(tokens)] = 1
            truncated[row], injected[row] = False, True
            texts[row], scores[row] = text, scorer(text, rollout.answer_of_row(row))
        return Rollout(rollout.prompts, G, ids, mask, truncated, texts, scores, injected)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


def _pad_to(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if tensor.size(1) >= width:
        return tensor.clone()
    pad = torch.full((tensor.size(0), width - tensor.size(1)), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, pad], dim=1)
