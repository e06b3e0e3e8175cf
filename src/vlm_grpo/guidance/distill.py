"""On-policy distillation: a frozen teacher scores the policy's own samples, token by token.

Guidance injection and the supervised terms train on demonstrations, text the policy did not write
(off-policy). Here the policy trains on its own completions, with a per-token signal from a stronger
model's log-probability of each sampled token (reverse KL on the student's own text: Agarwal et al.,
GKD, 2024; "on-policy distillation", Thinking Machines, 2025). With N rows of C completion tokens,
s (N, C) the policy's log-probs of its sampled tokens at rollout time (`StepBatch.old_logp`), t (N, C)
the teacher's of the same tokens after the same prompt and prefix, m (N, C) the tokens distilled
(those in GRPO's loss mask, of rows the policy sampled: demonstrations are not distilled) and
c = `distill.coef` at the step:

- `advantage`: each distilled token's advantage gains c x (t - s) (`LossInputs.token_advantages`),
  the single-sample estimate of minus the reverse KL, log p_teacher / p_student, at that token; the
  variant's surrogate (clip, ratio) then treats it as any advantage. Its expected gradient is the
  reverse KL's, per position (a discount of 0, as Thinking Machines'), mode-seeking: the policy
  leaves what the teacher would not write;
- `loss`: c x k3(s, t) = c x (exp(t - s) - (t - s) - 1) per distilled token joins the loss, beside the
  surrogate, as GRPO's KL to the reference does (`LossInputs.teacher_weight`); its gradient
  c x (1 - exp(t - s)) raises the log-prob of a sampled token the teacher prefers (t > s) and lowers
  one it does not. On the policy's own samples its expectation is the gradient of the forward KL
  KL(teacher || policy) at the sampled prefixes (mode-covering), not of the reverse one;
- `both`: the two together.

The teacher is scored at the run's temperature, through the same log-prob path as the reference
model (`PolicyOps.teacher_logprobs`): s is the policy's log-prob at that temperature, the
distribution it sampled from, so t - s compares two distributions at one temperature (at the
study's T = 1, the teacher's own). Metrics: `distill/coef`, `distill/teacher_tokens` (completion
tokens the teacher scored: its compute), `distill/tokens` (tokens distilled), `distill/reverse_kl`
(mean of s - t over them), `distill/teacher_kl` (the loss term's k3, `loss` and `both`) and the
teacher's time, `time/teacher_s`. A step whose weight is 0 runs no teacher pass.

Requirements: the teacher shares the policy's tokenizer (checked at start-up: it scores the
policy's token ids) and reads the policy's encoded prompts, images included (a model of the same
family and processor, e.g. a larger Qwen2-VL for a Qwen2-VL policy). It is held whole on every
process, so `fsdp` and `zero_stage` are refused.

Not here: GKD's full-distribution variant (a generalised JSD over the whole vocabulary at each
position). It needs the teacher's whole next-token distribution at every completion position,
where this path keeps one log-prob per token: at a 152k vocabulary, 64 rows of 1,000 tokens hold
9.7e9 teacher probabilities (39 GB in float32), or else a joint pass of the teacher's and the
policy's hidden states through both output heads a chunk at a time with a backward pass of its own
(`core/head.py` has one for one head). The sampled-token estimate needs (N, C) floats.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..config import TrainConfig
from ..config_checks import sharded
from ..config_sections import Schedule, as_schedule
from ..core.algo import LossStats
from ..errors import ConfigError
from ..models import check_model_name
from ..rollout import Rollout, StepBatch
from .remedy import PolicyOps, Remedy, RemedyKit, StepContext, register_remedy
from .schedules import check_schedule, scheduled

COEF = Schedule(value=1.0, initial=1.0, final=0.0)  # constant 1; decaying: 1 -> 0 over the first 70 %
SIGNALS = ("advantage", "loss", "both")
PROBES = ("How many objects are there?", "<answer>3</answer>", "There are 12 items.", "Hello, world!")
"""Texts whose token ids show how two tokenizers differ, in the mismatch message."""


@dataclass
class DistillConfig:
    """The `distill` section: on-policy distillation from a frozen teacher on the policy's own samples."""

    teacher: str | None = None
    """The teacher, named as `model` is (a folder, a hub id or a registered name; None: off). It must share
    the policy's tokenizer and read its encoded prompts, images included: a model of the same family."""
    mode: str = "advantage"
    """How the teacher's signal enters the step: `advantage` (coef x (log p_teacher - log p_policy at
    rollout time) added to each sampled token's advantage), `loss` (coef x the k3 KL to the teacher per
    sampled token, beside the surrogate, as beta's KL to the reference) or `both`."""
    coef: Schedule = field(default_factory=lambda: COEF)
    """Weight c of the signal, a schedule over training (`distill.coef.schedule=linear_decay`: 1 -> 0 over
    the first 70 %); a number is a constant. A step at 0 runs no teacher pass."""

    def __post_init__(self) -> None:
        self.coef = as_schedule(self.coef, COEF)

    def check(self, cfg: TrainConfig, need) -> None:
        need(self.mode in SIGNALS, f"distill.mode={self.mode!r} is not one of {', '.join(SIGNALS)}")
        check_schedule("distill.coef", self.coef, need)
        if self.teacher is None:
            return
        try:
            check_model_name(self.teacher)
        except ValueError as exc:
            need(False, f"distill.teacher: {exc}")
        need(not sharded(cfg), f"{sharded(cfg)} needs distill.teacher unset: every process holds the whole teacher")
        need(
            not cfg.skip_zero_advantage_groups,
            "distill.teacher gives every sampled token a signal: skip_zero_advantage_groups would skip rows holding it",
        )

    def weight(self, step: int, max_steps: int, answer_present_rate: float) -> float:
        """The weight c at `step` (0-based)."""
        return scheduled(self.coef, step, max_steps, answer_present_rate)


def teacher_terms(
    rollout_logp: torch.Tensor,  # (N, C) s: the policy's log-probs of its sampled tokens at rollout time
    teacher_logp: torch.Tensor,  # (N, C) t: the teacher's of the same tokens
    taught: torch.Tensor,  # (N, C) bool: the tokens distilled
    coef: float,
    mode: str,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(per-token advantages c x (t - s) on taught tokens, 0 elsewhere, or None without `advantage`;
    the loss term's per-token weight c on taught tokens, or None without `loss`), each (N, C)."""
    zero = torch.zeros_like(rollout_logp)
    advantages = torch.where(taught, coef * (teacher_logp - rollout_logp), zero) if mode != "loss" else None
    weight = torch.where(taught, torch.full_like(zero, coef), zero) if mode != "advantage" else None
    return advantages, weight


def taught_tokens(batch: StepBatch) -> torch.Tensor:  # (N, C) bool
    """Tokens in GRPO's loss mask (no tool turn, no gated group, ...) of rows the policy sampled."""
    injected = batch.rollout.injected.to(batch.loss_mask.device)
    return batch.loss_mask.bool() & ~injected.unsqueeze(1)


def check_same_tokenizer(policy, teacher, name: str) -> None:
    """One line where the teacher's tokenizer is not the policy's: the teacher scores the policy's ids."""
    ours, theirs = policy.get_vocab(), teacher.get_vocab()
    if ours == theirs:
        return

    def ids(tokenizer, text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    shown = next((text for text in PROBES if ids(policy, text) != ids(teacher, text)), None)
    example = f"; {shown!r} is {ids(teacher, shown)} against {ids(policy, shown)}" if shown is not None else ""
    raise ConfigError(
        f"distill.teacher={name} has another tokenizer than the policy ({len(theirs)} tokens against "
        f"{len(ours)}{example}): the teacher scores the policy's token ids, so it needs the same tokenizer"
    )


def load_teacher(name: str, kit: RemedyKit):
    """The frozen teacher, on the run's device; its tokenizer checked against the policy's."""
    if kit.load_frozen is None:
        raise ConfigError("distill.teacher needs a run that loads a teacher (RemedyKit.load_frozen)")
    teacher, processor = kit.load_frozen(name)
    check_same_tokenizer(kit.tokenizer, getattr(processor, "tokenizer", processor), name)
    return teacher


@register_remedy
class OnPolicyDistillation(Remedy):
    """The `distill` section as a remedy: the teacher's per-token signal on every sampled token."""

    name, order, options = "distill", 40, DistillConfig
    needs_rollout_logprobs = True  # s, in the signal and in distill/reverse_kl

    def __init__(self, cfg: TrainConfig, kit: RemedyKit):
        super().__init__(cfg, kit)
        self.teacher = load_teacher(self.settings.teacher, kit)
        self.coef = 0.0
        self.measured = (0.0, 0.0, 0.0)  # this process's step: tokens scored, tokens taught, sum of s - t

    @classmethod
    def wanted(cls, cfg: TrainConfig) -> bool:
        return cfg.distill.teacher is not None

    def plan(self, rollout: Rollout, context: StepContext) -> None:
        self.coef = self.settings.weight(context.step, context.max_steps, context.answer_present_rate)

    def after_batch(self, batch: StepBatch, ops: PolicyOps) -> StepBatch:
        """The batch with the teacher's terms on its sampled tokens (none at weight 0)."""
        self.measured = (0.0, 0.0, 0.0)
        if self.coef == 0:
            return batch
        rollout_logp = batch.old_logp  # present: needs_rollout_logprobs
        teacher_logp = ops.teacher_logprobs(self.teacher, batch.rollout).to(rollout_logp.device, rollout_logp.dtype)
        taught = taught_tokens(batch).to(rollout_logp.device)
        advantages, weight = teacher_terms(rollout_logp, teacher_logp, taught, self.coef, self.settings.mode)
        gap = float(((rollout_logp - teacher_logp) * taught).sum())
        self.measured = (float(batch.rollout.completion_mask.sum()), float(taught.sum()), gap)
        if advantages is not None and batch.token_advantages is not None:  # another remedy's terms stay
            advantages = advantages + batch.token_advantages
        return dataclasses.replace(
            batch,
            token_advantages=advantages if advantages is not None else batch.token_advantages,
            teacher_logp=teacher_logp if weight is not None else None,
            teacher_weight=weight,
        )

    def metrics(self, rollout: Rollout, advantages: torch.Tensor, stats: LossStats, ops: PolicyOps) -> dict:
        scored, taught, gap = (ops.world.sum(value) for value in self.measured)
        return {
            "distill/coef": self.coef,
            "distill/teacher_tokens": scored,
            "distill/tokens": taught,
            "distill/reverse_kl": gap / taught if taught else float("nan"),
            "distill/teacher_kl": stats.mean("teacher_kl"),
        }
