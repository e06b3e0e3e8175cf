"""Supervised signal from demonstrations: an SFT warm-up, a CHORD-style term, HPT's gate.

- warm-up (`sft.warmup_steps`): the first N of max_steps train every prompt's demonstration by
  likelihood, nothing sampled (the warm-up the study proposes to compare with injection);
- CHORD (arXiv:2508.11408): loss = (1 - mu) x GRPO + mu x SFT over the step's demonstrations,
  mu on the injection schedules (constant, linear_decay, adaptive);
- HPT's gate (arXiv:2509.04419): a group whose sampled rows hold no correct answer leaves the
  GRPO loss and trains on its demonstration with weight 1 instead.

The supervised term is a weighted token mean of the demonstrations' negative log-likelihood at
temperature 1: sum over groups of weight x (sum of the demonstration's token NLLs), divided by
the demonstration tokens of the minibatch; one demonstration per group, written in the prompt's
style and ending with the end-of-turn token, as injected rows are.

`SupervisedTerms` is the remedy (`remedy.py`) that runs the warm-up steps, plans each step's term,
gates groups out of the GRPO loss and back-propagates the term minibatch by minibatch; its options are
the `sft` section (`SftConfig`).

Departures: CHORD-mu only (a global weight; CHORD-phi's per-token weighting is not used); HPT's
switch threshold is fixed at zero correct rows; demonstrations use their own seeded generator,
so adding a supervised term leaves injection's draws as they were.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig
from ..config_checks import check_demonstration_template, sharded
from ..config_sections import Schedule, as_schedule
from ..core.algo import LossStats
from ..data import Sample
from ..rollout import PromptBatch, Rollout, StepBatch
from ..rollout.batch import RowTurns, tool_token_mask
from ..seeding import SeededRng
from ..tasks.styles import PromptStyle
from .remedy import PolicyOps, Remedy, RemedyKit, StepContext, demonstration_tokens, register_remedy
from .schedules import check_schedule, scheduled

COEF = Schedule(value=0.0, initial=0.5, final=0.0)  # off; decaying: 0.5 -> 0


@dataclass
class SftConfig:
    """The `sft` section: supervised signal from demonstrations (warm-up steps, CHORD's term, HPT's gate)."""

    warmup_steps: int = 0
    """The first N of max_steps are supervised steps on demonstrations (one per prompt, prompts_per_step
    prompts, one optimizer update each; nothing sampled): the SFT warm-up before GRPO (N >= max_steps:
    supervised fine-tuning only)."""
    coef: Schedule = field(default_factory=lambda: COEF)
    """CHORD-style weight mu of a supervised term on the step's demonstrations (one per group):
    loss = (1 - mu) x GRPO + mu x SFT, a schedule over training (`sft.coef.schedule=linear_decay`:
    0.5 -> 0 over 70 %); a number is a constant. 0 (constant): off."""
    gate: str = "none"
    """`no_success` (HPT-style): a group whose sampled rows hold no correct answer leaves the GRPO loss
    and trains on its demonstration instead (weight 1); `none`: no gate."""

    def __post_init__(self) -> None:
        self.coef = as_schedule(self.coef, COEF)

    @property
    def active(self) -> bool:
        """The update holds a supervised term on some step."""
        return self.gate != "none" or self.coef.schedule != "constant" or self.coef.value > 0

    def check(self, cfg: TrainConfig, need) -> None:
        need(self.gate in ("none", "no_success"), f"sft.gate={self.gate!r} is not one of none, no_success")
        check_schedule("sft.coef", self.coef, need)
        need(self.warmup_steps >= 0, f"sft.warmup_steps={self.warmup_steps} must be >= 0")
        if self.warmup_steps or self.active:
            check_demonstration_template(cfg, need, "a supervised signal")
        need(
            not (self.active and sharded(cfg)),
            f"{sharded(cfg)} needs sft.coef=0 and sft.gate=none: ranks may train different numbers of "
            "demonstrations, and a sharded forward is a collective (sft.warmup_steps works)",
        )

    def weight(self, step: int, max_steps: int, answer_present_rate: float) -> float:
        """CHORD's mixing weight mu at `step`; 0 when no supervised term is configured."""
        if self.coef.schedule == "constant" and self.coef.value == 0:
            return 0.0
        return scheduled(self.coef, step, max_steps, answer_present_rate)


DemoLogprobs = Callable[..., torch.Tensor]
"""(groups (n,), demonstration ids (n, D), mask (n, D)[, turns]) -> per-token log-probs (n, D), with gradient."""


@dataclass
class SupervisedPlan:
    """One step's supervised term over its B groups."""

    coef: float
    """mu: the GRPO loss is scaled by 1 - mu, non-gated demonstrations weigh mu."""
    weights: torch.Tensor
    """(B,) weight of each group's demonstration: 0 (none), mu, or 1 (gated)."""
    gated: torch.Tensor
    """(B,) bool: groups without a correct sampled row, out of the GRPO loss (gate `no_success`)."""
    ids: torch.Tensor
    """(B, D) demonstration tokens, right-padded."""
    mask: torch.Tensor
    """(B, D) 1 on demonstration tokens."""
    turns: list[RowTurns | None] | None = None
    """(B,) tool-using demonstrations' turns (their tool tokens are attended to, not trained); None: one turn each."""

    def groups_in(self, rows: torch.Tensor, group_size: int) -> torch.Tensor:  # (g,)
        """Groups with a demonstration to train whose first row is among `rows` (each group once per epoch)."""
        groups = rows[rows % group_size == 0] // group_size
        return groups[self.weights[groups] > 0]


class Supervisor(SeededRng):
    """Writes demonstrations and decides, per step, which groups train on them and with what weight."""

    def __init__(
        self, cfg: SftConfig, style: PromptStyle, tokenizer, end_id: int, pad_id: int, seed: int, tool_demo=None
    ):
        self.cfg, self.style, self.tokenizer = cfg, style, tokenizer
        self.end_id, self.pad_id = end_id, pad_id
        self.rng = random.Random(f"sft-{seed}")
        self.tool_demo = tool_demo  # RemedyKit.tool_demonstration

    def demonstrations(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, list | None]:
        """(B, D) ids and mask of each sample's demonstration, and their tool turns (None: no sample
        calls a tool). A sample with `calls` makes them first where the run has tools."""
        texts = [self.style.demonstration(sample.answer, self.rng) for sample in samples]
        tokens, turns = [], []
        for sample, text in zip(samples, texts):
            row_tokens, row_turns = demonstration_tokens(self.tokenizer, self.end_id, self.tool_demo, sample, text)
            tokens.append(row_tokens)
            turns.append(row_turns)
        width = max(len(t) for t in tokens)
        ids = torch.full((len(tokens), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(tokens), width)
        for row, t in enumerate(tokens):
            ids[row, : len(t)] = torch.tensor(t)
            mask[row, : len(t)] = 1
        return ids, mask, turns if any(t is not None for t in turns) else None

    def plan(self, rollout: Rollout, step: int, max_steps: int, answer_present_rate: float) -> SupervisedPlan:
        """This step's supervised term (all weights 0 on a step without one: every process still runs
        the same collectives)."""
        G = rollout.group_size
        coef = self.cfg.weight(step, max_steps, answer_present_rate)
        if self.cfg.gate == "no_success":
            correct = torch.tensor([s.correct for s in rollout.scores]).view(-1, G)
            gated = ~(correct & ~rollout.injected.cpu().view(-1, G)).any(1)
        else:
            gated = torch.zeros(len(rollout.scores) // G, dtype=torch.bool)
        weights = torch.where(gated, torch.ones(len(gated)), torch.full((len(gated),), coef))
        ids, mask, turns = self.demonstrations(rollout.prompts.samples[: len(gated)])
        return SupervisedPlan(coef, weights, gated, ids, mask, turns)

    @staticmethod
    def backward(
        plan: SupervisedPlan,
        groups: torch.Tensor,  # (g,) groups of this minibatch (this process's)
        micro_batch_size: int,
        minibatch_tokens: float,  # demonstration tokens of the global minibatch, per process
        logprobs: DemoLogprobs,
        backward: Callable[[torch.Tensor], None],
        stats: LossStats,
    ) -> None:
        """Back-propagate the minibatch's supervised term, micro-batch by micro-batch (none without groups)."""
        for chunk in groups.split(micro_batch_size) if len(groups) else ():
            width = int(plan.mask[chunk].sum(1).max())
            ids, mask = plan.ids[chunk, :width], plan.mask[chunk, :width]
            turns = [plan.turns[i] for i in chunk.tolist()] if plan.turns is not None else None
            logp = logprobs(chunk, ids, mask) if turns is None else logprobs(chunk, ids, mask, turns)
            if turns is not None:  # a tool's tokens are read, not trained
                mask = mask.masked_fill(tool_token_mask(turns, width), 0)
            mask = mask.to(logp.device)
            weights = plan.weights[chunk].to(logp.device)
            loss = (weights.unsqueeze(1) * -logp * mask).sum() / max(minibatch_tokens, 1.0)
            stats.add("sft_nll", -logp.detach(), mask)
            backward(loss)


@register_remedy
class SupervisedTerms(Remedy):
    """The `sft` section as a remedy: warm-up steps, CHORD's weighted term, HPT's gate."""

    name, order, options = "sft", 30, SftConfig
    writes_demonstrations = True

    def __init__(self, cfg: TrainConfig, kit: RemedyKit):
        super().__init__(cfg, kit)
        self.supervisor = Supervisor(
            self.settings, kit.style, kit.tokenizer, kit.end_id, kit.pad_id, kit.seed, kit.tool_demonstration
        )
        self.current: SupervisedPlan | None = None

    @classmethod
    def wanted(cls, cfg: TrainConfig) -> bool:
        return cfg.sft.active or cfg.sft.warmup_steps > 0

    def owns_step(self, step: int) -> bool:
        return step < self.settings.warmup_steps

    def own_step(self, step: int, ops: PolicyOps) -> dict:
        """One warm-up step: every prompt of the batch trains on its demonstration, one update."""
        samples = ops.next_samples()
        prompts = ops.encode(samples)
        ids, mask, turns = self.supervisor.demonstrations(samples)
        n = len(samples)
        plan = SupervisedPlan(1.0, torch.ones(n), torch.zeros(n, dtype=torch.bool), ids, mask, turns)
        stats = LossStats()
        ops.zero_grad()
        tokens = ops.world.sum(float(mask.sum())) / ops.world.size
        Supervisor.backward(
            plan, torch.arange(n), ops.micro_batch_size, tokens, _demo_logprobs(ops, prompts, 1), ops.backward, stats
        )
        norm = ops.optimizer_step()
        return {
            "sft/loss": stats.mean("sft_nll"),
            "sft/groups": ops.world.sum(float(n)),
            "sft/coef": 1.0,
            "optim/grad_norm": norm,
        }

    def plan(self, rollout: Rollout, context: StepContext) -> None:
        if not self.settings.active:  # warm-up only: no term after it
            self.current = None
            return
        self.current = self.supervisor.plan(rollout, context.step, context.max_steps, context.answer_present_rate)

    def loss_mask(self, mask: torch.Tensor, rollout: Rollout) -> torch.Tensor:  # (N, C)
        if self.current is not None:  # gated groups train on their demonstration instead
            mask[self.current.gated.repeat_interleave(rollout.group_size).to(mask.device)] = 0
        return mask

    def grpo_scale(self) -> float:
        return 1 - self.current.coef if self.current is not None and self.current.coef else 1.0

    def minibatch_backward(self, batch: StepBatch, minibatch: torch.Tensor, ops: PolicyOps, stats: LossStats) -> None:
        """The supervised term of one minibatch: the demonstrations of its groups, weighted as planned."""
        plan = self.current
        if plan is None:
            return
        G = batch.rollout.group_size
        groups = plan.groups_in(minibatch, G)
        tokens = ops.world.sum(float(plan.mask[groups].sum())) / ops.world.size
        logprobs = _demo_logprobs(ops, batch.rollout.prompts, G)
        Supervisor.backward(plan, groups, ops.micro_batch_size, tokens, logprobs, ops.backward, stats)

    def metrics(self, rollout: Rollout, advantages: torch.Tensor, stats: LossStats, ops: PolicyOps) -> dict:
        if not self.settings.active:
            return {}
        plan = self.current
        weights = plan.weights if plan is not None else torch.zeros(0)
        gated = plan.gated if plan is not None else torch.zeros(0, dtype=torch.bool)
        return {
            "sft/loss": stats.mean("sft_nll"),
            "sft/groups": ops.world.sum(float((weights > 0).sum())),
            "sft/gated_groups": ops.world.sum(float(gated.sum())),
            "sft/coef": plan.coef if plan is not None else 0.0,
        }

    def state_dict(self) -> dict:
        return self.supervisor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.supervisor.load_state_dict(state)


def _demo_logprobs(ops: PolicyOps, prompts: PromptBatch, group_size: int) -> DemoLogprobs:
    """Log-probs of demonstrations for groups of `prompts`, at temperature 1 (a likelihood, not a ratio)."""

    def logprobs(groups: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, turns=None) -> torch.Tensor:
        return ops.logprobs(prompts, groups * group_size, ids, mask, group_size, 1.0, turns)

    return logprobs
