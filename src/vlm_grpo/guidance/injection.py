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
A new mode is one entry registered in MODES. `GuidanceInjection` is the remedy (`remedy.py`) that
applies it to every draw of a step; its options are the `injection` section (`InjectionConfig`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import TrainConfig
from ..config_checks import check_demonstration_template
from ..config_sections import Schedule, as_schedule
from ..core.algo import LossStats
from ..registry import Registry
from ..rollout import Rollout
from ..rollout.batch import RowTurns
from ..rollout.turns import turn_tokens
from ..seeding import SeededRng
from ..tasks.rewards import Scorer
from ..tasks.styles import PromptStyle
from ..tools.calls import outside_calls
from .remedy import PolicyOps, Remedy, RemedyKit, StepContext, register_remedy
from .schedules import check_schedule, scheduled

RATE = Schedule(value=1.0, initial=0.8, final=0.0)  # the study's rule; its proposed decay 0.8 -> 0
PREFIX_RATIO = Schedule(value=0.5, initial=0.5, final=0.5)


@dataclass
class InjectionConfig:
    """The `injection` section: guidance injection of ground-truth demonstrations into groups."""

    mode: str = "none"
    """Which rows of a group become ground-truth demonstrations: none | random | rate | rescue | a
    registered mode (`MODES`)."""
    rate: Schedule = field(default_factory=lambda: RATE)
    """Strength s: the probability that a group is injected (in `rate` mode also the fraction of its rows),
    a schedule over training (`injection.rate.schedule=linear_decay`: the study's 0.8 -> 0 over 70 %); a
    number is a constant. `random` at 1.0 is the study's rule."""
    rows: int | None = None
    """`rate` mode: rows injected per chosen group, instead of round(rate * G)."""
    payload: str = "full"
    """What an injected row holds: `full` (the whole demonstration) or `prefix` (its first part, which
    the policy continues by sampling: Prefix-RFT / UFT / BREAD-style guidance)."""
    prefix_ratio: Schedule = field(default_factory=lambda: PREFIX_RATIO)
    """`prefix`: share of the demonstration's tokens given (at least one); the policy samples the rest. A
    schedule: `injection.prefix_ratio.schedule=linear` with `.initial` and `.final` decays it over the run."""

    def __post_init__(self) -> None:
        self.rate, self.prefix_ratio = as_schedule(self.rate, RATE), as_schedule(self.prefix_ratio, PREFIX_RATIO)

    def check(self, cfg: TrainConfig, need) -> None:
        need(
            self.mode == "none" or self.mode in MODES,
            f"injection.mode={self.mode!r} is not one of none, {', '.join(MODES.names())}",
        )
        need(self.payload in ("full", "prefix"), f"injection.payload={self.payload!r} is not one of full, prefix")
        check_schedule("injection.rate", self.rate, need)
        check_schedule("injection.prefix_ratio", self.prefix_ratio, need)
        for name in ("value", "initial", "final"):
            share = getattr(self.prefix_ratio, name)
            need(share > 0, f"injection.prefix_ratio.{name}={share} must be in (0, 1]")
        need(
            self.rows is None or 1 <= self.rows <= cfg.num_generations - 1,
            f"injection.rows={self.rows} must be in 1..num_generations-1 = 1..{cfg.num_generations - 1}: "
            "at least one row stays sampled",
        )
        if self.mode != "none":
            check_demonstration_template(cfg, need, "injection")

    def strength(self, step: int, max_steps: int, answer_present_rate: float) -> float:
        """The injection strength s at `step` (0-based); 0 without injection."""
        return 0.0 if self.mode == "none" else scheduled(self.rate, step, max_steps, answer_present_rate)


Continue = Callable[[list[int], list[list[int]]], list[tuple[list[int], bool]]]
"""(rows, their prefixes) -> per row, the policy's continuation tokens and whether it hit the length limit."""
Converse = Callable[[list[int], list[tuple[list[int], RowTurns]]], list[tuple[list[int], bool, RowTurns, str]]]
"""(prompts of the rows, prefixes with their tool turns) -> per row: the policy's tokens after the prefix,
truncated, the conversation's turns, its final turn's text (`ToolEngine.continue_conversations`)."""


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


@dataclass(frozen=True)
class Row:
    """An injected row: its tokens, how many lead ones are the demonstration's, and its text."""

    tokens: list[int]
    given: int
    truncated: bool
    text: str
    turns: RowTurns | None = None
    """A tool-using demonstration's turns (its tool tokens are read, not trained); None: one turn."""


class Injector(SeededRng):
    """Replaces chosen rows of a rollout with tokenised demonstrations and re-scores them."""

    def __init__(self, cfg: InjectionConfig, style: PromptStyle, tokenizer, end_id: int, pad_id: int, seed: int):
        self.cfg, self.style, self.tokenizer = cfg, style, tokenizer
        self.end_id, self.pad_id = end_id, pad_id
        self.rng = random.Random(f"injection-{seed}")
        self.tool_demonstration = None  # set by a run with tools (RemedyKit.tool_demonstration)

    def demonstration(self, answer: Any) -> tuple[str, list[int]]:
        """Text and token ids of a demonstration; it ends with the end-of-turn token so the model learns to stop."""
        text = self.style.demonstration(answer, self.rng)
        return text, turn_tokens(self.tokenizer, text, self.end_id)

    def apply(
        self,
        rollout: Rollout,
        scorer: Scorer,
        strength: float,
        gather: Callable[[Any], list] = lambda value: [value],
        rank: int = 0,
        prefix: tuple[float, Continue] | tuple[float, Continue, Converse | None] | None = None,
    ) -> Rollout:
        """Inject the chosen rows of this process's rollout. `gather` returns every process's value in
        rank order: the plan and the demonstrations are drawn for the global batch on every process,
        with the same generator, and each keeps its own slice, so N processes inject exactly as one
        process with the same global batch (and their generators stay in step).

        `prefix` (payload `prefix`): the share of each demonstration to give, the function that lets
        the policy continue the chosen rows (called on every process, rows or none, as sampling may be
        a collective) and, with tools, the one that continues a conversation after a demonstration's
        calls and the tools' answers: a tool-using demonstration's prefix is its calls, whatever the share."""
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
        if self.tool_demonstration is not None:  # demonstrations that call the sample's tools first
            rows = {row: self._with_calls(rollout, row, demo) for row, demo in rows.items()}
        if prefix is not None:
            ratio, complete, *conversing = prefix  # (ratio, complete) or (ratio, complete, converse)
            converse = conversing[0] if conversing else None
            calling = {r for r in demos if converse is not None and self._calls(rollout, r)}
            rows = self._continued({r: d for r, d in demos.items() if r not in calling}, ratio, complete)
            rows.update(self._conversed(rollout, {r: demos[r] for r in calling}, converse))
        if not rows:
            return rollout
        return replace_rows(rollout, rows, scorer, self.pad_id)

    @staticmethod
    def _calls(rollout: Rollout, row: int) -> tuple:
        return rollout.prompts.samples[row // rollout.group_size].calls

    def _conversed(self, rollout: Rollout, demos: dict[int, tuple[str, list[int]]], converse: Converse) -> dict:
        """Each chosen row as its sample's demonstrated calls and the tools' answers, then the policy's turns."""
        if not demos:
            return {}
        chosen = sorted(demos)
        G = rollout.group_size
        prefixes = [self.tool_demonstration(rollout.prompts.samples[row // G], None) for row in chosen]
        continued = converse([row // G for row in chosen], prefixes)
        return {
            row: Row(given + more, len(given), truncated, text, turns)
            for row, (given, _), (more, truncated, turns, text) in zip(chosen, prefixes, continued)
        }

    def _with_calls(self, rollout: Rollout, row: int, demo: Row) -> Row:
        sample = rollout.prompts.samples[row // rollout.group_size]
        if not sample.calls:
            return demo
        tokens, turns = self.tool_demonstration(sample, demo.text)
        return Row(tokens, len(tokens), False, demo.text, turns)

    def _continued(self, demos: dict[int, tuple[str, list[int]]], ratio: float, complete: Continue) -> dict[int, Row]:
        """Each chosen row as its demonstration's first `ratio` of tokens (the end token left out, at
        least one) followed by the policy's continuation."""
        chosen = sorted(demos)
        prefixes = [demos[row][1][: max(1, round(ratio * (len(demos[row][1]) - 1)))] for row in chosen]
        continued = complete(chosen, prefixes)
        # With tools, a call the continuation writes is not run here, and a call is never an answer.
        answered = outside_calls if self.tool_demonstration is not None else str
        return {
            row: Row(
                given + more,
                len(given),
                truncated,
                answered(self.tokenizer.decode(given + more, skip_special_tokens=True)),
            )
            for row, given, (more, truncated) in zip(chosen, prefixes, continued)
        }


@register_remedy
class GuidanceInjection(Remedy):
    """Injection as a remedy: each draw's chosen rows become demonstrations (or their prefixes,
    continued by the policy). Always built: its metrics describe every run, injected or not."""

    name, order, options = "injection", 10, InjectionConfig

    def __init__(self, cfg: TrainConfig, kit: RemedyKit):
        super().__init__(cfg, kit)
        self.injector = Injector(self.settings, kit.style, kit.tokenizer, kit.end_id, kit.pad_id, kit.seed)
        self.injector.tool_demonstration = kit.tool_demonstration
        self.writes_demonstrations = self.settings.mode != "none"
        self.strength, self.prefix_ratio = 0.0, None

    @classmethod
    def wanted(cls, cfg: TrainConfig) -> bool:
        return True

    def after_draw(self, rollout: Rollout, context: StepContext, ops: PolicyOps) -> Rollout:
        # The schedule reads the global rate; the plan is drawn for the global batch (see Injector.apply).
        inj = self.settings
        strength = inj.strength(context.step, context.max_steps, context.answer_present_rate)
        ratio = scheduled(inj.prefix_ratio, context.step, context.max_steps) if inj.payload == "prefix" else None
        if context.first:  # the step reports its first draw's strength
            self.strength, self.prefix_ratio = strength, ratio

        def complete(rows: list[int], prefixes: list[list[int]]) -> list[tuple[list[int], bool]]:
            return ops.continue_prefixes(rollout.prompts, rows, prefixes)

        converse = None
        if ops.continue_conversations is not None:

            def converse(owners, prefixes):
                return ops.continue_conversations(rollout.prompts, owners, prefixes)

        prefix = (ratio, complete, converse) if ratio is not None else None
        return self.injector.apply(rollout, self.kit.scorer, strength, ops.world.gather, ops.world.rank, prefix)

    def metrics(self, rollout: Rollout, advantages: torch.Tensor, stats: LossStats, ops: PolicyOps) -> dict:
        metrics = injection_metrics(rollout, advantages, self.strength, self.prefix_ratio)
        if self.prefix_ratio is not None:  # the update's view of tokens sampled after a prefix
            metrics.update(
                {
                    "policy/ratio_mean_continuation": stats.mean("ratio_continuation"),
                    "policy/clip_fraction_continuation": stats.mean("clip_continuation"),
                    "injection/continuation_logp_mean": stats.mean("logp_continuation"),
                }
            )
        return metrics

    def state_dict(self) -> dict:
        return self.injector.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.injector.load_state_dict(state)


def injection_metrics(
    rollout: Rollout, advantages: torch.Tensor, strength: float, prefix_ratio: float | None = None
) -> dict:
    """What injection did this step; with a prefix payload (its scheduled share given), the
    injected rows' prefix and continuation apart."""
    injected = rollout.injected
    rewards = rollout.rewards
    metrics = {
        "injection/strength": strength,
        "injection/rate": float(injected.float().mean()),
        "injection/groups_injected": int(injected.view(-1, rollout.group_size).any(1).sum()),
        "injection/advantage_mean": float(advantages.cpu()[injected].mean()) if injected.any() else float("nan"),
        "reward/mean_all": float(rewards.mean()),
    }
    if prefix_ratio is not None:
        metrics.update(prefix_metrics(rollout, prefix_ratio))
    return metrics


def prefix_metrics(rollout: Rollout, prefix_ratio: float) -> dict:
    rows = rollout.injected.to(rollout.completion_mask.device)
    given = rollout.demo_tokens[rows].float().sum(1)  # (k,) prefix tokens per injected row
    total = rollout.completion_mask[rows].sum(1)  # (k,)
    nan = float("nan")
    correct = [s.correct for s, injected in zip(rollout.scores, rollout.injected.tolist()) if injected]
    return {
        "injection/prefix_ratio": prefix_ratio,
        "injection/prefix_share": float(given.sum() / total.sum()) if len(total) else nan,
        "injection/prefix_tokens": float(given.mean()) if len(given) else nan,
        "injection/continuation_tokens": float((total - given).mean()) if len(total) else nan,
        "injection/continuation_accuracy": sum(correct) / len(correct) if correct else nan,
    }


def replace_rows(rollout: Rollout, rows: dict[int, Row], scorer: Scorer, pad_id: int) -> Rollout:
    """`rollout` with the given rows replaced (row index -> its new tokens), each marked injected (not
    sampled by the policy now: off-policy in the loss, left out of the sampled metrics) and re-scored."""
    width = max(rollout.completion_ids.size(1), max(len(r.tokens) for r in rows.values()))
    ids = _pad_to(rollout.completion_ids, width, pad_id)
    mask = _pad_to(rollout.completion_mask, width, 0)
    demo_tokens = _pad_to(rollout.demo_tokens, width, False)
    truncated, injected = rollout.truncated.clone(), rollout.injected.clone()
    texts, scores = list(rollout.texts), list(rollout.scores)
    engine_logp = _pad_to(rollout.engine_logp, width, 0.0) if rollout.engine_logp is not None else None
    turns = list(rollout.turns) if rollout.turns is not None else None
    for row, new in rows.items():
        ids[row] = pad_id
        ids[row, : len(new.tokens)] = torch.tensor(new.tokens, device=ids.device)
        mask[row] = 0
        mask[row, : len(new.tokens)] = 1
        demo_tokens[row] = False
        demo_tokens[row, : new.given] = True
        if engine_logp is not None:
            engine_logp[row] = 0.0  # the engine did not sample a demonstration
        truncated[row], injected[row] = new.truncated, True
        if new.turns is not None:  # a tool's tokens are neither the policy's nor the demonstration's
            demo_tokens[row, : len(new.tokens)] &= ~torch.tensor(new.turns.tool_tokens, device=demo_tokens.device)
        if new.turns is not None and turns is None:
            turns = [None] * len(texts)
        if turns is not None:
            turns[row] = new.turns
        texts[row], scores[row] = new.text, scorer(new.text, rollout.answer_of_row(row))
    G = rollout.group_size
    return Rollout(rollout.prompts, G, ids, mask, truncated, texts, scores, injected, demo_tokens, engine_logp, turns)


def _pad_to(tensor: torch.Tensor, width: int, value: float) -> torch.Tensor:
    if tensor.size(1) >= width:
        return tensor.clone()
    pad = torch.full((tensor.size(0), width - tensor.size(1)), value, dtype=tensor.dtype, device=tensor.device)
    return torch.cat([tensor, pad], dim=1)
