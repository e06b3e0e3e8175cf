"""Guidance injection: ground-truth demonstrations mixed into GRPO groups.

The study replaces k of a group's G sampled completions with the correct answer written in the
prompt's style (k uniform in 1..G-1, never all G, so the group keeps reward variance and the
policy keeps exploring). Here the schedule gives a strength s(step) in [0, 1]:
- `random`: each group is injected with probability s, k uniform in 1..G-1 (s = 1: the study);
- `rate`:   each group is injected with probability s, k = round(s * G) (or `rows`), in 1..G-1;
- `rescue`: only groups whose sampled rows hold no correct answer, each with probability s, k
            uniform in 1..G-1 (or `rows`), as BREAD / Guide-GRPO do; decided on correctness, not
            on the weighted reward (under `answer`+`format` wrong bare answers score above 0);
- payload: `full` (the row is the whole demonstration) or `prefix` (the row starts with the first
  `prefix_ratio` of the demonstration's tokens and the policy samples the rest: Prefix-RFT, UFT,
  BREAD); the row is scored as a whole; only the prefix's tokens are off-policy;
- the strength follows a schedule of `schedules.py` (the study's constant and linear decay, adaptive).
A new mode is one entry registered in MODES.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import InjectionConfig
from ..registry import Registry
from ..rollout import Rollout
from ..seeding import restore_python_rng
from ..tasks.rewards import REWARDS, Scorer
from ..tasks.styles import PromptStyle

Continue = Callable[[list[int], list[list[int]]], list[tuple[list[int], bool]]]
"""(rows, their prefixes) -> per row, the policy's continuation tokens and whether it hit the length limit."""


@dataclass(frozen=True)
class Mode:
    """Which groups may be injected, and how many of their rows (before clamping to 1..G-1)."""

    eligible: Callable[[list[bool]], bool]
    """Given which of the group's sampled rows are correct."""
    rows: Callable[[InjectionConfig, float, int, random.Random], int]


def _uniform_rows(cfg: InjectionConfig, strength: float, size: int, rng: random.Random) -> int:
    return cfg.rows if cfg.rows is not None else rng.randint(1, size - 1)


def _rate_rows(cfg: InjectionConfig, strength: float, size: int, rng: random.Random) -> int:
    return cfg.rows if cfg.rows is not None else round(strength * size)


MODES: Registry[Mode] = Registry("injection mode")
MODES.register("random", Mode(lambda correct: True, _uniform_rows))
MODES.register("rate", Mode(lambda correct: True, _rate_rows))
MODES.register("rescue", Mode(lambda correct: not any(correct), _uniform_rows))


def rows_to_inject(
    cfg: InjectionConfig,
    strength: float,
    group_correct: list[list[bool]],  # B groups: which of the G sampled rows are correct
    rng: random.Random,
) -> list[list[int]]:
    """For each group, the row positions to replace (never all G, never any when strength is 0)."""
    mode = MODES.get(cfg.mode) if cfg.mode != "none" else None
    chosen: list[list[int]] = []
    for correct in group_correct:
        size = len(correct)
        if mode is None or strength <= 0 or not mode.eligible(correct) or rng.random() >= strength:
            chosen.append([])
            continue
        k = min(max(mode.rows(cfg, strength, size, rng), 1), size - 1)
        chosen.append(sorted(rng.sample(range(size), k)))
    return chosen


def check_demonstrations(style: PromptStyle, scorer: Scorer, targets: list[Any]) -> None:
    """Refuse to start when a demonstration would not earn the top reward: every built-in reward
    must give it 1 and the task must read it as correct (a `default`-style bare answer scores -1
    under `answer_strict`; a custom demonstration whose last number is not the answer scores 0)."""
    rng = random.Random(0)  # its own generator: checking draws nothing from the injector's
    for target in targets:
        demo = style.demonstration(target, rng)
        for name, fn in zip(scorer.names, scorer.fns):
            value = float(fn(demo, target, style))
            if name in REWARDS and value < 1.0:
                raise ValueError(
                    f"prompt style {style.name!r} writes the demonstration {demo!r}, which scores {value:g} "
                    f"under reward {name!r} (top 1): injected rows would train a wrong answer; change "
                    "reward_funcs, prompt.style or prompt.demonstration"
                )
        if not scorer(demo, target).correct:
            raise ValueError(
                f"prompt style {style.name!r} writes the demonstration {demo!r}, which the task does not "
                "read as the correct answer: change prompt.demonstration"
            )


@dataclass(frozen=True)
class Row:
    """An injected row: its tokens, how many lead ones are the demonstration's, and its text."""

    tokens: list[int]
    given: int
    truncated: bool
    text: str


class Injector:
    """Replaces chosen rows of a rollout with tokenised demonstrations and re-scores them."""

    def __init__(self, cfg: InjectionConfig, style: PromptStyle, tokenizer, end_id: int, pad_id: int, seed: int):
        self.cfg, self.style, self.tokenizer = cfg, style, tokenizer
        self.end_id, self.pad_id = end_id, pad_id
        self.rng = random.Random(f"injection-{seed}")

    def demonstration(self, answer: Any) -> tuple[str, list[int]]:
        """Text and token ids of a demonstration; it ends with the end-of-turn token so the model learns to stop."""
        text = self.style.demonstration(answer, self.rng)
        return text, self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.end_id]

    def apply(
        self,
        rollout: Rollout,
        scorer: Scorer,
        strength: float,
        gather: Callable[[Any], list] = lambda value: [value],
        rank: int = 0,
        prefix: tuple[float, Continue] | None = None,
    ) -> Rollout:
        """Inject the chosen rows of this process's rollout. `gather` returns every process's value in
        rank order: the plan and the demonstrations are drawn for the global batch on every process,
        with the same generator, and each keeps its own slice, so N processes inject exactly as one
        process with the same global batch (and their generators stay in step).

        `prefix` (payload `prefix`): the share of each demonstration to give and the function that
        lets the policy continue the chosen rows; it is called on every process, rows or none, as
        sampling may be a collective."""
        if self.cfg.mode == "none" or strength <= 0:  # the same on every process: none gathers
            return rollout
        G = rollout.group_size
        local = [
            ([s.correct for s in rollout.scores[g : g + G]], rollout.answer_of_row(g))
            for g in range(0, len(rollout.scores), G)
        ]
        parts = gather(local)
        groups = [group for part in parts for group in part]
        offset = sum(len(part) for part in parts[:rank]) * G
        plan = rows_to_inject(self.cfg, strength, [correct for correct, _ in groups], self.rng)
        every = {g * G + i: self.demonstration(groups[g][1]) for g, positions in enumerate(plan) for i in positions}
        demos = {row - offset: demo for row, demo in every.items() if offset <= row < offset + len(rollout.texts)}
        rows = {row: Row(tokens, len(tokens), False, text) for row, (text, tokens) in demos.items()}
        if prefix is not None:
            rows = self._continued(demos, *prefix)
        if not rows:
            return rollout
        return self._replaced(rollout, scorer, rows)

    def _continued(self, demos: dict[int, tuple[str, list[int]]], ratio: float, complete: Continue) -> dict[int, Row]:
        """Each chosen row as its demonstration's first `ratio` of tokens (the end token left out, at
        least one) followed by the policy's continuation."""
        chosen = sorted(demos)
        prefixes = [demos[row][1][: max(1, round(ratio * (len(demos[row][1]) - 1)))] for row in chosen]
        continued = complete(chosen, prefixes)
        return {
            row: Row(given + more, len(given), truncated, self.tokenizer.decode(given + more, skip_special_tokens=True))
            for row, given, (more, truncated) in zip(chosen, prefixes, continued)
        }

    def _replaced(self, rollout: Rollout, scorer: Scorer, rows: dict[int, Row]) -> Rollout:
        width = max(rollout.completion_ids.size(1), max(len(r.tokens) for r in rows.values()))
        ids = _pad_to(rollout.completion_ids, width, self.pad_id)
        mask = _pad_to(rollout.completion_mask, width, 0)
        demo_tokens = _pad_to(rollout.demo_tokens, width, False)
        truncated, injected = rollout.truncated.clone(), rollout.injected.clone()
        texts, scores = list(rollout.texts), list(rollout.scores)
        engine_logp = _pad_to(rollout.engine_logp, width, 0.0) if rollout.engine_logp is not None else None
        for row, new in rows.items():
            ids[row] = self.pad_id
            ids[row, : len(new.tokens)] = torch.tensor(new.tokens, device=ids.device)
            mask[row] = 0
            mask[row, : len(new.tokens)] = 1
            demo_tokens[row] = False
            demo_tokens[row, : new.given] = True
            if engine_logp is not None:
                engine_logp[row] = 0.0  # the engine did not sample a demonstration
            truncated[row], injected[row] = new.truncated, True
            texts[row], scores[row] = new.text, scorer(new.text, rollout.answer_of_row(row))
        return Rollout(
            rollout.prompts, rollout.group_size, ids, mask, truncated, texts, scores, injected, demo_tokens, engine_logp
        )

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        restore_python_rng(self.rng, state["rng"])


def _pad_to(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if tensor.size(1) >= width:
        return tensor.clone()
    pad = torch.full((tensor.size(0), width - tensor.size(1)), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, pad], dim=1)
