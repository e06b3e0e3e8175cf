"""GRPO math as small pure tensor functions (no model, no state), each tested on literal tensors:
advantages, log-probs, ratios, surrogates, KL, importance weights and the loss's statistics. The loss
variants and `grpo_loss` are `losses.py`.

Shapes: B prompts, G completions per prompt, N = B*G completion rows, C completion tokens.

How this departs from the DeepSeekMath formulation (arXiv:2402.03300):
- the std in the advantage is the unbiased group std plus 1e-4, as TRL; `scale="none"` drops it
  (Dr. GRPO); groups whose rewards are all equal get exactly zero advantage; each scaling is a
  function registered in `ADVANTAGES` by `@register_advantage(name)`;
- the KL term is the k3 estimator added to the per-token loss, as the paper, and is off by
  default (beta = 0), as in the study;
- rows injected as demonstrations can be left out of the group statistics (their std floored
  at the whole group's), and can use LUFFY's p/(p+gamma) shaping (arXiv:2504.14945) instead of
  the clipped ratio;
- GSPO's sequence-level ratio (the exp of the row's mean log-ratio, applied to every token,
  arXiv:2507.18071), and `delta`, an upper bound on the unclipped ratio so a negative advantage
  cannot grow the loss without limit (two-sided clipping, as TRL);
- a row's advantage may carry a per-token term (`advantage_columns`: (N, C) instead of (N,)), which
  every surrogate reads token by token: on-policy distillation's teacher signal (guidance/distill.py);
- completions sampled by an engine other than the trained model (vLLM: other kernels, precision,
  or weights one step old) can weigh each token by the importance ratio p_trainer / p_engine, the
  token's or its row's, truncated to [C_min, C_max] or masked outside them (TIS, Yao et al. 2025;
  TRL's four `vllm_importance_sampling_mode`s, whose sequence ratio is the product over the row).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..config_checks import check_named
from ..registry import Registry

STD_EPS = 1e-4

Scaling = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""(centred rewards (B, G), group std (B, 1), eps) -> advantages (B, G)."""

ADVANTAGES: Registry[Scaling] = Registry("scale_rewards")
check_named("scale_rewards", ADVANTAGES)
"""Advantage scalings by the name `scale_rewards` gives them."""


def register_advantage(name: str) -> Callable[[Scaling], Scaling]:
    """Decorator: the function becomes `scale_rewards=name`, for the config and `group_advantages`."""

    def add(fn: Scaling) -> Scaling:
        ADVANTAGES.register(name, fn)
        return fn

    return add


@register_advantage("group")
def scale_by_group_std(centred: torch.Tensor, std: torch.Tensor, eps: float) -> torch.Tensor:
    """(r - mean_g) / (std_g + eps): the paper's normalisation, TRL's `scale_rewards="group"`."""
    return centred / (std + eps)


@register_advantage("none")
def unscaled(centred: torch.Tensor, std: torch.Tensor, eps: float) -> torch.Tensor:
    """r - mean_g: Dr. GRPO's advantage (arXiv:2503.20783), without the std's difficulty bias."""
    return centred


def group_advantages(
    rewards: torch.Tensor,  # (B, G)
    scale: str = "group",
    stats_mask: torch.Tensor | None = None,  # (B, G) bool: rows that enter mean/std; None = all
    eps: float = STD_EPS,
) -> torch.Tensor:  # (B, G)
    """Rewards centred on their group's mean and scaled as `scale` names (`ADVANTAGES`): by default
    (r - mean_g) / (std_g + eps), or r - mean_g with scale="none".

    With a stats mask (injected rows left out), the counted rows' std is floored at the whole
    group's: a group whose counted rows score alike or nearly so (sampled rows at 0.5, 0.5, 0.51
    beside demonstrations at 1) would otherwise divide by ~0 and give advantages in the hundreds;
    a group counting fewer than two rows uses the whole group's std.
    """
    rewards = rewards.float()
    whole_mean = rewards.mean(dim=1, keepdim=True)
    whole_std = rewards.std(dim=1, keepdim=True) if rewards.size(1) > 1 else torch.zeros_like(whole_mean)
    if stats_mask is None:
        mean, std = whole_mean, whole_std
    else:
        weight = stats_mask.float()
        count = weight.sum(dim=1, keepdim=True)
        mean = torch.where(count > 0, (rewards * weight).sum(1, keepdim=True) / count.clamp(min=1), whole_mean)
        var = ((rewards - mean) ** 2 * weight).sum(1, keepdim=True) / (count - 1).clamp(min=1)
        counted_std = torch.where(count >= 2, var.sqrt(), torch.zeros_like(var))
        std = torch.maximum(counted_std, whole_std)
    return ADVANTAGES.get(scale)(rewards - mean, std, eps)


def importance_ratio(
    logp: torch.Tensor,  # (N, C) current policy
    old_logp: torch.Tensor,  # (N, C) policy that produced the rollout
    mask: torch.Tensor | None = None,  # (N, C) completion tokens; needed for level="sequence"
    level: str = "token",
) -> torch.Tensor:  # (N, C) per token, or (N, 1) per sequence
    """pi/pi_old per token, or GSPO's per sequence: exp of the row's mean log-ratio over its tokens."""
    if level == "token":
        return torch.exp(logp - old_logp)
    if level == "sequence":
        if mask is None:
            raise ValueError("a sequence-level ratio needs the completion mask")
        mask = mask.to(logp.dtype)
        return torch.exp(((logp - old_logp) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0))
    raise ValueError(f"unknown importance_sampling_level {level!r}: use token or sequence")


def advantage_columns(advantages: torch.Tensor) -> torch.Tensor:  # (N, 1) or (N, C)
    """Advantages as a column over a row's tokens: a row's one advantage (N,) -> (N, 1), broadcast to
    its tokens; per-token advantages (N, C) (a row's advantage plus a per-token term) stay as they are."""
    return advantages.unsqueeze(1) if advantages.dim() == 1 else advantages


def clipped_surrogate(
    logp: torch.Tensor,  # (N, C) current policy
    old_logp: torch.Tensor,  # (N, C) policy that produced the rollout
    advantages: torch.Tensor,  # (N,) one per row, or (N, C) one per token
    epsilon: float,
    epsilon_high: float | None = None,
    delta: float | None = None,
    level: str = "token",
    mask: torch.Tensor | None = None,  # (N, C); needed for level="sequence"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # (N, C) each
    """PPO's clipped objective as a per-token loss; also returns the ratio and where clipping bit.

    `delta` caps the unclipped ratio (two-sided clipping); `level="sequence"` uses GSPO's ratio."""
    ratio = importance_ratio(logp, old_logp, mask, level)
    adv = advantage_columns(advantages)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + (epsilon_high if epsilon_high is not None else epsilon))
    capped = torch.clamp(ratio, max=delta) if delta is not None else ratio
    unclipped, clipped = capped * adv, clipped_ratio * adv
    loss = -torch.min(unclipped, clipped)
    clip_active = clipped < unclipped  # the min picked the clipped term: no gradient through it
    return loss.expand_as(logp), ratio.expand_as(logp), clip_active.expand_as(logp)


def luffy_surrogate(
    logp: torch.Tensor,  # (N, C)
    advantages: torch.Tensor,  # (N,) one per row, or (N, C) one per token
    gamma: float = 0.1,
) -> torch.Tensor:  # (N, C)
    """LUFFY's shaped off-policy objective: -p/(p+gamma) * A, no ratio, no clipping.

    Its gradient gamma/(p+gamma)^2 * dp keeps learning from demonstration tokens the policy
    finds unlikely, where the plain ratio's gradient would vanish with p.
    """
    prob = torch.exp(logp)
    return -(prob / (prob + gamma)) * advantage_columns(advantages)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per token: exp(q - p) - (q - p) - 1 >= 0."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


@dataclass
class LossStats:
    """Masked sums and counts over an update phase, split by row origin; means at the end."""

    sums: dict[str, tuple[float, float]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        mask = mask.float()
        total, count = self.sums.get(name, (0.0, 0.0))
        self.sums[name] = (total + float((values.float() * mask).sum()), count + float(mask.sum()))

    def add_total(self, name: str, value: torch.Tensor) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + float(value)

    def mean(self, name: str) -> float:
        total, count = self.sums.get(name, (0.0, 0.0))
        return total / count if count else float("nan")

    def total(self, name: str) -> float:
        return self.totals.get(name, 0.0)


def engine_is_ratios(
    trainer_logp: torch.Tensor,  # (N, C) the trainer's log-probs of the sampled tokens (no gradient)
    engine_logp: torch.Tensor,  # (N, C) the sampling engine's log-probs of the same tokens
    mask: torch.Tensor,  # (N, C) 1 on tokens the engine sampled
    level: str,  # token | sequence
) -> torch.Tensor:  # (N, C) per token, or (N, 1) per row
    """The raw importance ratios p_trainer / p_engine: each sampled token's, or each row's (the product
    over its sampled tokens, exp of the summed log-ratio, as TRL's sequence modes)."""
    diff = (trainer_logp - engine_logp) * mask
    return torch.exp(diff.sum(1, keepdim=True) if level == "sequence" else diff)


def engine_is_weights(
    trainer_logp: torch.Tensor,  # (N, C)
    engine_logp: torch.Tensor,  # (N, C)
    mask: torch.Tensor,  # (N, C) 1 on tokens the engine sampled
    mode: str,  # token_truncate | token_mask | sequence_truncate | sequence_mask
    clip_min: float | None,
    clip_max: float | None,
) -> torch.Tensor:  # (N, C)
    """Each sampled token's weight: its ratio (or its row's) clipped to [clip_min, clip_max] (`*_truncate`)
    or 0 where it is outside them (`*_mask`); 1 on tokens the engine did not sample (demonstrations,
    padding). A bound of None is no bound."""
    level, treatment = mode.split("_")
    ratio = engine_is_ratios(trainer_logp, engine_logp, mask, level)
    if treatment == "truncate":  # no bound at all: the raw ratio (torch.clamp refuses two None)
        weight = ratio if clip_min is None and clip_max is None else ratio.clamp(min=clip_min, max=clip_max)
    else:
        low = clip_min if clip_min is not None else -math.inf
        high = clip_max if clip_max is not None else math.inf
        weight = ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
    return torch.where(mask.bool(), weight.expand_as(trainer_logp), torch.ones_like(trainer_logp))


IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def engine_is_changed_shares(
    trainer_logp: torch.Tensor,  # (N, C)
    engine_logp: torch.Tensor,  # (N, C)
    mask: torch.Tensor,  # (N, C) 1 on tokens the engine sampled
    clip_min: float | None,
    clip_max: float | None,
) -> dict[str, float]:
    """For each mode, the share of sampled tokens whose weight differs from their raw ratio at that mode's
    level (truncated, or masked to 0) under these bounds: how much of the batch each correction touches."""
    tokens = mask.bool()
    shares = {}
    for mode in IS_MODES:
        ratio = engine_is_ratios(trainer_logp, engine_logp, mask, mode.split("_")[0]).expand_as(trainer_logp)
        weights = engine_is_weights(trainer_logp, engine_logp, mask, mode, clip_min, clip_max)
        shares[mode] = float((weights != ratio)[tokens].float().mean()) if bool(tokens.any()) else 0.0
    return shares


def logprob_mismatch(
    trainer_logp: torch.Tensor,  # (N, C)
    engine_logp: torch.Tensor,  # (N, C)
    mask: torch.Tensor,  # (N, C)
) -> dict[str, float]:
    """How far the engine's sampling policy is from the trainer's, on the sampled tokens: mean and max
    |log p_trainer - log p_engine|, and KL(engine || trainer) by the k3 estimator on the engine's
    samples (unbiased, never negative: r - 1 - log r with r = p_trainer / p_engine)."""
    tokens = mask.bool()
    if not bool(tokens.any()):
        return {"logp_gap_mean": 0.0, "logp_gap_max": 0.0, "kl": 0.0}
    diff = (trainer_logp - engine_logp)[tokens]
    return {
        "logp_gap_mean": float(diff.abs().mean()),
        "logp_gap_max": float(diff.abs().max()),
        "kl": float((torch.exp(diff) - 1 - diff).mean()),
    }
