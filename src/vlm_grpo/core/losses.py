"""The policy loss: its variants, each one function registered by name, and `grpo_loss`, which runs the
one a run's `loss_type` names on a micro-batch.

A variant is a per-token objective (a surrogate: `clip_surrogate` unless the decorator names another)
and a reduction, the decorated function, which turns the masked per-token loss of a micro-batch into
its share of the minibatch's loss. `grpo_loss` puts between them what every variant shares: LUFFY's
shaping on demonstration tokens, beta x k3 KL, a teacher's weighted k3 KL (on-policy distillation), the
engine's importance weights, and the statistics. A row's advantage may carry a per-token term
(`LossInputs.token_advantages`, added token by token), which every surrogate reads.

    @register_loss("row_sum")
    def row_sum(per_token, inputs):  # (n, C) -> (): every row's token sum, averaged over rows
        return (per_token * inputs.loss_mask).sum() / inputs.minibatch_rows

The shipped variants carry TRL's names (GRPOTrainer._compute_loss, TRL 1.16) and meanings. How they
depart from TRL's:
- a share is normalised by the minibatch, not by the micro-batch it runs in, so the loss does not depend
  on how rows are grouped into micro-batches (`micro_batch_size`, `micro_batch_tokens`). TRL's `bnpo`
  divides each micro-batch by its own tokens and averages micro-batches; `grpo`, `sapo` and `dr_grpo`
  average micro-batches of equal rows: the same as ours when the micro-batches hold equal rows (and, for
  bnpo, equal tokens). Over processes the minibatch's tokens are the global count per rank, as TRL's dapo;
- `dapo` and `cispo` divide by the loss tokens of the step's whole batch over its minibatches per
  epoch, as TRL's num_items_in_batch scaled to one optimizer step; the same as `bnpo` when a step is one
  minibatch (this project's default);
- the engine's importance weights multiply the KL term as well as the policy term (TRL adds the KL
  after weighting); the configuration refuses `cispo` without `epsilon_high`, which TRL then takes
  from epsilon, capping the ratio itself at 0.2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config_checks import check_named
from ..config_sections import LossSettings
from ..registry import Registry
from .algo import LossStats, advantage_columns, clipped_surrogate, importance_ratio, k3_kl, luffy_surrogate


@dataclass
class LossInputs:
    """What a micro-batch's loss reads besides the policy's log-probs: n rows, C completion tokens."""

    advantages: torch.Tensor  # (n,)
    loss_mask: torch.Tensor  # (n, C) 1 on tokens that enter the loss
    minibatch_tokens: float  # loss tokens of the micro-batch's minibatch (all processes' / processes)
    minibatch_rows: int  # rows of that minibatch (this process's)
    old_logp: torch.Tensor | None = None  # (n, C) rollout-time; None: logp's own detached values (ratio 1)
    ref_logp: torch.Tensor | None = None  # (n, C) reference; None: no KL
    injected: torch.Tensor | None = None  # (n,) bool: rows that are demonstrations; None: none
    demo_tokens: torch.Tensor | None = None  # (n, C) bool: tokens copied from a demonstration; None: injected rows'
    is_weights: torch.Tensor | None = None  # (n, C) truncated importance weights (engine != trainer); None: 1
    step_tokens: float | None = None  # loss tokens of the step's batch / its minibatches per epoch, as
    # minibatch_tokens counts them (dapo, cispo); None: minibatch_tokens
    max_completion_length: int | None = None  # dr_grpo's constant row length
    token_advantages: torch.Tensor | None = None  # (n, C) added to each row's advantage token by token (on-policy
    # distillation's teacher signal, guidance/distill.py); None: every token takes its row's advantage
    teacher_logp: torch.Tensor | None = None  # (n, C) a teacher's log-probs of the tokens; None: no teacher term
    teacher_weight: torch.Tensor | None = None  # (n, C) weight of the per-token k3 KL to the teacher (0: none)

    @property
    def token_advantage(self) -> torch.Tensor:  # (n,), or (n, C) with token_advantages
        """What a surrogate multiplies: the row's advantage, plus the per-token term where there is one."""
        if self.token_advantages is None:
            return self.advantages
        return self.advantages.unsqueeze(1) + self.token_advantages


@dataclass
class TokenLoss:
    """A surrogate's per-token loss and what the statistics read from it."""

    loss: torch.Tensor  # (n, C)
    ratio: torch.Tensor  # (n, C) pi / pi_old (GSPO's row ratio on every token of its row)
    clipped: torch.Tensor  # (n, C) bool: tokens whose ratio the surrogate cut off


Surrogate = Callable[[torch.Tensor, LossInputs, LossSettings], TokenLoss]
Reduction = Callable[[torch.Tensor, LossInputs], torch.Tensor]


@dataclass(frozen=True)
class LossVariant:
    reduce: Reduction
    """(n, C) per-token loss -> the micro-batch's share of the minibatch's loss."""
    surrogate: Surrogate
    """(logp, inputs, settings) -> the per-token objective."""


LOSSES: Registry[LossVariant] = Registry("loss_type")
check_named("loss_type", LOSSES)
"""Loss variants by the name `loss_type` gives them."""


def old_logp(logp: torch.Tensor, inputs: LossInputs) -> torch.Tensor:  # (n, C)
    return inputs.old_logp if inputs.old_logp is not None else logp.detach()


def clip_surrogate(logp: torch.Tensor, inputs: LossInputs, settings: LossSettings) -> TokenLoss:
    """PPO's clipped ratio x advantage (`delta` caps the unclipped ratio; GSPO's ratio at sequence level)."""
    loss, ratio, clipped = clipped_surrogate(
        logp,
        old_logp(logp, inputs),
        inputs.token_advantage,
        settings.epsilon,
        settings.epsilon_high,
        settings.delta,
        settings.importance_sampling_level,
        inputs.loss_mask,
    )
    return TokenLoss(loss, ratio, clipped)


def cispo_surrogate(logp: torch.Tensor, inputs: LossInputs, settings: LossSettings) -> TokenLoss:
    """CISPO (MiniMax-M1, arXiv:2506.13585): -min(ratio, epsilon_high) x A x log p, the capped ratio without
    gradient, so every token keeps a gradient; clipped: capped tokens with A > 0 (TRL's cispo_clip_ratio)."""
    ratio = importance_ratio(logp, old_logp(logp, inputs), inputs.loss_mask, settings.importance_sampling_level)
    cap = settings.epsilon_high if settings.epsilon_high is not None else settings.epsilon
    adv = advantage_columns(inputs.token_advantage)
    loss = -torch.clamp(ratio, max=cap).detach() * adv * logp
    clipped = (ratio > cap) & (adv > 0)
    return TokenLoss(loss, ratio.expand_as(logp), clipped.expand_as(logp))


def sapo_surrogate(logp: torch.Tensor, inputs: LossInputs, settings: LossSettings) -> TokenLoss:
    """SAPO (arXiv:2511.20347): -sigmoid(tau (ratio - 1)) x 4 / tau x A, a smooth gate instead of the clip;
    tau is sapo_temperature_pos where A > 0, sapo_temperature_neg elsewhere. Nothing is clipped."""
    ratio = importance_ratio(logp, old_logp(logp, inputs), inputs.loss_mask, settings.importance_sampling_level)
    adv = advantage_columns(inputs.token_advantage)
    tau = torch.where(adv > 0, settings.sapo_temperature_pos, settings.sapo_temperature_neg)
    loss = -(torch.sigmoid(tau * (ratio - 1)) * 4 / tau) * adv
    return TokenLoss(loss.expand_as(logp), ratio.expand_as(logp), torch.zeros_like(logp, dtype=torch.bool))


def register_loss(name: str, surrogate: Surrogate = clip_surrogate) -> Callable[[Reduction], Reduction]:
    """Decorator: the reduction becomes `loss_type=name`, over `surrogate`'s per-token loss."""

    def add(reduce: Reduction) -> Reduction:
        LOSSES.register(name, LossVariant(reduce, surrogate))
        return reduce

    return add


def _masked(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:  # (n, C)
    return per_token * inputs.loss_mask.to(per_token.dtype)


@register_loss("bnpo")
def bnpo(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """Sum over tokens / tokens in the minibatch: every token of the minibatch weighs the same."""
    return _masked(per_token, inputs).sum() / max(inputs.minibatch_tokens, 1.0)


@register_loss("grpo")
def grpo(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """Sum over rows of (the row's token mean) / rows in the minibatch: the paper's 1/|o_i| form."""
    mask = inputs.loss_mask.to(per_token.dtype)
    row_mean = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return row_mean.sum() / max(inputs.minibatch_rows, 1)


@register_loss("dr_grpo")
def dr_grpo(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """Sum over tokens / (rows in the minibatch x max_completion_length), a constant (Dr. GRPO)."""
    if not inputs.max_completion_length:
        raise ValueError("loss_type=dr_grpo needs max_completion_length")
    return _masked(per_token, inputs).sum() / (max(inputs.minibatch_rows, 1) * inputs.max_completion_length)


@register_loss("dapo")
def dapo(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """Sum over tokens / the step's loss tokens per minibatch (DAPO's token-level mean, TRL's default)."""
    tokens = inputs.step_tokens if inputs.step_tokens is not None else inputs.minibatch_tokens
    return _masked(per_token, inputs).sum() / max(tokens, 1.0)


@register_loss("cispo", surrogate=cispo_surrogate)
def cispo(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """CISPO's per-token loss, reduced as `dapo` (as TRL)."""
    return dapo(per_token, inputs)


@register_loss("sapo", surrogate=sapo_surrogate)
def sapo(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """SAPO's per-token loss, reduced as `grpo` (as TRL)."""
    return grpo(per_token, inputs)


def grpo_loss(
    logp: torch.Tensor,  # (n, C) current policy, with gradient
    inputs: LossInputs,
    settings: LossSettings,
    stats: LossStats | None = None,
) -> torch.Tensor:
    """A micro-batch's share of the minibatch loss under `settings.loss_type`; statistics into `stats`.

    Per token: the variant's surrogate of the row's advantage (plus `token_advantages` where given; LUFFY's
    shaping on demonstration tokens when asked), plus beta x k3 KL to the reference and, with a teacher,
    `teacher_weight` x k3 KL to it, times the engine's importance weights; reduced by the variant. `stats`
    receives the policy loss and the KLs apart (`loss_policy` without them), and ratio, clipping and
    log-probs split by token origin: `_injected` (copied from a demonstration), `_sampled` (sampled by
    the policy), and `_continuation` (sampled after a demonstration's prefix, when `demo_tokens` is given).
    """
    stats = stats if stats is not None else LossStats()
    variant = LOSSES.get(settings.loss_type)
    terms = variant.surrogate(logp, inputs, settings)
    per_token, clipped, mask = terms.loss, terms.clipped, inputs.loss_mask
    injected = inputs.injected if inputs.injected is not None else torch.zeros(len(logp), dtype=torch.bool)
    inj_rows = injected.to(logp.device).unsqueeze(1).expand_as(per_token)
    demo = inj_rows if inputs.demo_tokens is None else inputs.demo_tokens
    if settings.off_policy == "luffy":
        shaped = luffy_surrogate(logp, inputs.token_advantage, settings.luffy_gamma)
        per_token = torch.where(demo, shaped, per_token)
        clipped = clipped & ~demo
    policy_part = per_token
    if inputs.ref_logp is not None:
        kl = k3_kl(logp, inputs.ref_logp)
        stats.add("kl", kl.detach(), mask)
        if settings.beta > 0:
            per_token = per_token + settings.beta * kl
    if inputs.teacher_logp is not None:  # on-policy distillation's loss term (guidance/distill.py)
        taught = inputs.teacher_weight > 0
        # Untaught tokens (demonstrations, padding) compare with themselves: exactly 0, no overflow, no gradient.
        teacher_kl = k3_kl(logp, torch.where(taught, inputs.teacher_logp, logp.detach()))
        stats.add("teacher_kl", teacher_kl.detach(), mask * taught)
        per_token = per_token + inputs.teacher_weight * teacher_kl
    if inputs.is_weights is not None:
        per_token = per_token * inputs.is_weights
        policy_part = policy_part * inputs.is_weights
        stats.add("is_weight", inputs.is_weights, mask)
    loss = variant.reduce(per_token, inputs)
    policy_loss = loss if policy_part is per_token else variant.reduce(policy_part.detach(), inputs)
    stats.add_total("loss_policy", policy_loss.detach())
    origins = [("", mask), ("_injected", mask * demo), ("_sampled", mask * ~demo)]
    if inputs.demo_tokens is not None:
        origins.append(("_continuation", mask * (inj_rows & ~demo)))
    for origin, tokens in origins:
        stats.add("ratio" + origin, terms.ratio.detach(), tokens)
        stats.add("clip" + origin, clipped.float(), tokens)
        if origin not in ("", "_sampled"):
            stats.add("logp" + origin, logp.detach(), tokens)
    return loss
