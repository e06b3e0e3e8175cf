"""Our per-token loss against TRL's GRPOTrainer._compute_loss on the same tensors.

TRL's loss method is called unbound with the attributes it reads; the log-probs it would compute
from a model are the literal tensors below, so both sides see exactly the same inputs.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")

from vlm_grpo.config import LossSettings  # noqa: E402
from vlm_grpo.core import algo  # noqa: E402
from vlm_grpo.core.losses import LossInputs, grpo_loss  # noqa: E402


def trl_loss(logp, old, ref, adv, mask, settings):
    accelerator = SimpleNamespace(
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
        sync_gradients=True,
        num_processes=1,
    )
    args = SimpleNamespace(
        use_bias_correction_kl=False,
        delta=settings.delta,
        sapo_temperature_pos=settings.sapo_temperature_pos,
        sapo_temperature_neg=settings.sapo_temperature_neg,
        steps_per_generation=1,
    )
    fake = SimpleNamespace(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level=settings.importance_sampling_level,
        beta=settings.beta,
        args=args,
        loss_type=settings.loss_type,
        epsilon_low=settings.epsilon,
        epsilon_high=settings.epsilon_high if settings.epsilon_high is not None else settings.epsilon,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        use_vllm=False,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        accelerator=accelerator,
        _metrics={"train": defaultdict(list)},
        max_completion_length=mask.size(1),
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
    )
    inputs = {
        "prompt_ids": torch.zeros(mask.size(0), 1, dtype=torch.long),
        "prompt_mask": torch.ones(mask.size(0), 1),
        "completion_ids": torch.zeros_like(mask, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs)


def ours(logp, old, ref, adv, mask, settings):
    """One micro-batch that is the whole minibatch and the whole step, as TRL's side sees it."""
    tokens, rows, width = float(mask.sum()), mask.size(0), mask.size(1)
    inputs = LossInputs(adv, mask, tokens, rows, old_logp=old, ref_logp=ref, step_tokens=tokens)
    inputs.max_completion_length = width
    return grpo_loss(logp, inputs, settings)


VARIANTS = [  # loss_type, importance_sampling_level, delta, epsilon_high
    ("bnpo", "token", None, None),
    ("grpo", "token", None, None),
    ("dr_grpo", "token", None, None),
    ("dapo", "token", None, None),
    ("grpo", "sequence", None, None),  # GSPO as its paper sets it up
    ("bnpo", "sequence", None, None),
    ("bnpo", "token", 1.3, None),  # two-sided clipping
    ("dr_grpo", "sequence", 1.25, None),
    ("cispo", "token", None, 1.3),  # the cap bites on some tokens
    ("cispo", "sequence", None, 1.2),
    ("sapo", "token", None, None),
    ("sapo", "sequence", None, None),
]


@pytest.mark.parametrize("loss_type,level,delta,epsilon_high", VARIANTS)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_equal_trl(loss_type, level, delta, epsilon_high, beta):
    settings = LossSettings(
        loss_type=loss_type, importance_sampling_level=level, delta=delta, epsilon_high=epsilon_high, beta=beta
    )
    g = torch.Generator().manual_seed(0)
    n, c = 12, 7
    base = -torch.rand(n, c, generator=g) * 2
    spread = 0.3 if level == "token" and delta is None else 1.0  # a row's mean log-ratio averages noise out
    old = base + spread * torch.randn(n, c, generator=g)  # ratios far enough from 1 for clipping to bite
    ref = base + 0.2 * torch.randn(n, c, generator=g)
    adv = torch.randn(n, generator=g)
    adv[1::2] = -adv[1::2].abs()  # half the rows with a negative advantage
    mask = torch.ones(n, c)
    mask[0, 4:] = 0
    mask[3, 2:] = 0
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    loss_ours = ours(a, old, ref, adv, mask, settings)
    loss_trl = trl_loss(b, old, ref, adv, mask, settings)
    loss_ours.backward()
    loss_trl.backward()
    assert loss_ours.item() == pytest.approx(loss_trl.item(), rel=1e-6, abs=1e-7)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    ratio = algo.importance_ratio(a, old, mask, level)
    assert ((ratio > (epsilon_high or 1.2)) & (adv.unsqueeze(1) > 0)).any()  # the case exercises clipping
    if delta is not None:
        assert ((ratio > delta) & (adv.unsqueeze(1) < 0)).any()  # and the delta bound
