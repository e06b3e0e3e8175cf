"""The remedy seam: what a cold-start remedy may do to a GRPO step, and what it may ask of the policy.

A remedy is a class with the hooks below; each hook's default leaves the step as it was, so a
remedy overrides only the phases it acts in. The trainer calls every built remedy at each phase, in
registration order, and names none of them:

1. `owns_step(step)` -> `own_step(step, ops)`: the remedy trains the whole step itself (the SFT
   warm-up); nothing is sampled.
2. `after_draw(rollout, context, ops)`: after each draw is sampled and scored, change or replace
   rows (guidance injection, prefix guidance). A replaced row is marked `injected`: it counts as
   a demonstration everywhere (metrics of sampled rows, the loss's split by origin).
3. `regroup(rollout, redraw, ops)`: draw again and keep other groups (dynamic sampling).
4. `plan(rollout, context)`: decide the step's extra terms, once the step's rollout is final;
   `loss_mask(mask, rollout)` may drop rows from the GRPO loss and `grpo_scale()` weighs it;
   `after_batch(batch, ops)`: once the step batch is built (advantages, loss mask, rollout-time and
   reference log-probs), add per-token terms to it (on-policy distillation's teacher signal).
5. `minibatch_backward(batch, minibatch, ops, stats)`: after GRPO's backward in each minibatch,
   add the remedy's own loss terms (the supervised term) before the optimizer step.
6. `metrics(rollout, advantages, stats, ops)`: what the remedy reports for the step (its update
   statistics are in `stats`).
7. `state_dict()` / `load_state_dict(state)`: checkpointed under the remedy's name.

A remedy is built from the run's config and a `RemedyKit` (the prompt style, the scorer, the
tokenizer and the ids a demonstration needs, and a loader of frozen models such as a teacher). Its
options are a dataclass it declares (`options`, every field documented, an optional `check(cfg,
need)`): they are the config's section of the remedy's name, built and validated with the rest of
the config, and the remedy reads them as `self.settings`. The built-in ones decide from their own
section whether they take part (`wanted`); one registered by a plug-in, or named
`package.module:ClassName`, takes part when `remedies` lists it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..config import TrainConfig
from ..config_checks import register_check
from ..config_sections import register_section
from ..core.algo import LossStats
from ..registry import Registry, import_object
from ..rollout import PromptBatch, Rollout, StepBatch
from ..rollout.batch import RowTurns
from ..rollout.turns import turn_tokens
from ..tasks.rewards import Scorer
from ..tasks.styles import PromptStyle


@dataclass(frozen=True)
class StepContext:
    """Where a draw sits in training."""

    step: int
    """0-based step."""
    max_steps: int
    answer_present_rate: float
    """The draw's sampled answer-present rate over every process (what adaptive schedules read)."""
    first: bool = True
    """The step's first draw (dynamic sampling's later draws are not)."""


@dataclass
class RemedyKit:
    """What a remedy needs to write and score demonstrations."""

    style: PromptStyle
    scorer: Scorer
    tokenizer: Any
    end_id: int
    """The family's end-of-turn token: a demonstration ends with it, so the policy learns to stop."""
    pad_id: int
    seed: int
    tool_demonstration: Callable[[Any, str], tuple[list[int], RowTurns]] | None = None
    """With tools: (sample, answer text) -> tokens and tool turns of a demonstration that makes the
    sample's `calls` and then answers (`ToolEngine.demonstration`); None: demonstrations answer at once."""
    load_frozen: Callable[[str], tuple[Any, Any]] | None = None
    """(a model's folder or name) -> that model frozen (no gradients, eval mode) on the run's device in the
    reference's precision, and its processor: a distillation teacher. None where the run has no loader."""


def demonstration_tokens(
    tokenizer, end_id: int, tool_demonstration, sample, text: str
) -> tuple[list[int], RowTurns | None]:
    """A demonstration of `sample` answering `text`: its calls, the tools' turns, then the answer where
    the run has tools (`RemedyKit.tool_demonstration`) and the sample has `calls`; else the answer as
    one turn. Tokens, and the tool turns (None: one turn)."""
    if tool_demonstration is not None and sample.calls:
        return tool_demonstration(sample, text)
    return turn_tokens(tokenizer, text, end_id), None


@dataclass
class PolicyOps:
    """What a remedy may ask of the policy and the run, instead of the trainer itself."""

    world: Any
    """The processes (`training/distributed/world.py`): sum, gather, rank, size, local_slice, mean_metrics."""
    micro_batch_size: int
    logprobs: Callable[..., torch.Tensor]
    """(prompts, rows, completion ids (n, C), mask (n, C), group size, temperature[, turns]) -> (n, C)
    per-token log-probs with gradient, under the run's autocast; rows index prompts' groups times group
    size; `turns` (the rows' tool turns, `Rollout.row_turns`) where the rows called tools."""
    backward: Callable[[torch.Tensor], None]
    """Back-propagate a loss through the distribution strategy (gradients accumulate)."""
    zero_grad: Callable[[], None]
    optimizer_step: Callable[[], float]
    """Clip, step and schedule; returns the gradient norm (nan for a skipped non-finite update)."""
    continue_prefixes: Callable[[PromptBatch, list[int], list[list[int]]], list[tuple[list[int], bool]]]
    """(prompts, rows, their prefixes) -> per row, the policy's continuation tokens and whether it hit
    the length limit; sampling may be a collective, so every process calls it, rows or none."""
    next_samples: Callable[[], list]
    """The prompt stream's next batch, this process's slice."""
    encode: Callable[[list], PromptBatch]
    """Samples -> the encoded prompt batch (the run's style and processor)."""
    continue_conversations: Callable | None = None
    """With tools: (prompts, the rows' prompt indices, prefixes as (tokens, RowTurns)) -> per row the
    policy's turns after the prefix (`ToolEngine.continue_conversations`); None without tools."""
    teacher_logprobs: Callable[[Any, Rollout], torch.Tensor] | None = None
    """(a frozen model from `RemedyKit.load_frozen`, the rollout) -> (N, C) its log-probs of every completion
    token, through the reference model's path (micro-batch by micro-batch, the run's temperature and
    autocast, no gradient), timed as the step's `teacher` phase; 0 past each row's end."""

    def next_prompts(self) -> PromptBatch:
        """The prompt stream's next batch, this process's slice, encoded."""
        return self.encode(self.next_samples())


class Remedy:
    """A cold-start remedy; every hook's default leaves the step as it was."""

    name = "remedy"
    order = 100
    """Position among the run's remedies (lower first): a hook runs remedy by remedy in this order."""
    writes_demonstrations = False
    """The run checks that the style's demonstrations earn the top reward before it starts."""
    options: type | None = None
    """The dataclass of its options, the config section named after it (None: no options)."""
    needs_rollout_logprobs = False
    """The step batch holds the rollout-time log-probs even where one update per step needs none."""

    def __init__(self, cfg: TrainConfig, kit: RemedyKit):
        self.cfg, self.kit = cfg, kit
        self.settings = cfg.sections[self.name] if self.options is not None else None  # its section, or None

    @classmethod
    def wanted(cls, cfg: TrainConfig) -> bool:
        """Whether this remedy takes part in a run of `cfg` (a plug-in's: when `remedies` names it)."""
        return cls.name in cfg.remedies

    def owns_step(self, step: int) -> bool:
        return False

    def own_step(self, step: int, ops: PolicyOps) -> dict:
        raise NotImplementedError(f"remedy {self.name!r} owns a step but does not train it")

    def after_draw(self, rollout: Rollout, context: StepContext, ops: PolicyOps) -> Rollout:
        return rollout

    def regroup(self, rollout: Rollout, redraw: Callable[[], Rollout], ops: PolicyOps) -> tuple[Rollout, dict]:
        return rollout, {}

    def plan(self, rollout: Rollout, context: StepContext) -> None:
        return None

    def loss_mask(self, mask: torch.Tensor, rollout: Rollout) -> torch.Tensor:  # (N, C)
        return mask

    def grpo_scale(self) -> float:
        return 1.0

    def after_batch(self, batch: StepBatch, ops: PolicyOps) -> StepBatch:
        return batch

    def minibatch_backward(self, batch: StepBatch, minibatch: torch.Tensor, ops: PolicyOps, stats: LossStats) -> None:
        return None

    def metrics(self, rollout: Rollout, advantages: torch.Tensor, stats: LossStats, ops: PolicyOps) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


REMEDIES: Registry[type[Remedy]] = Registry("remedy")


def register_remedy(cls: type[Remedy], replace: bool = False) -> type[Remedy]:
    """Register a remedy class under its `name` (usable as a decorator), with its options' section."""
    REMEDIES.register(cls.name, cls, replace)
    if cls.options is not None:
        register_section(cls.name, cls.options, replace)
    return cls


def remedy_class(spec: str) -> type[Remedy]:
    """A registered remedy name or `package.module:ClassName`."""
    if spec in REMEDIES:
        return REMEDIES.get(spec)
    cls = import_object(spec, "remedy")
    if not (isinstance(cls, type) and issubclass(cls, Remedy)):
        raise ValueError(f"remedy {spec!r} is not a subclass of vlm_grpo.guidance.Remedy")
    return cls


def build_remedies(cfg: TrainConfig, kit: RemedyKit) -> list[Remedy]:
    """The run's remedies in registration order, then those `remedies` names by import path."""
    classes = [cls for _, cls in sorted(REMEDIES.items(), key=lambda item: (item[1].order, item[0])) if cls.wanted(cfg)]
    classes += [remedy_class(spec) for spec in cfg.remedies if spec not in REMEDIES]
    return [cls(cfg, kit) for cls in classes]


def _check_remedies(cfg: TrainConfig, need) -> None:
    for spec in cfg.remedies:
        need(
            spec in REMEDIES or ":" in spec,
            f"remedies entry {spec!r} is not one of {', '.join(REMEDIES.names())} nor a 'package.module:ClassName'",
        )


register_check("remedies", _check_remedies)
