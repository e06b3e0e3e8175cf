"""Our per-token loss against TRL's GRPOTrainer._compute_loss on the same tensors.

TRL's loss method is called unbound with the attributes it reads; the log-probs it would compute
from a model are the literal tensors below, so both sides see exactly the same inputs.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")

from vlm_grpo.core import algo  # noqa: E402


def trl_loss(logp, old, ref, adv, mask, loss_type, beta, eps):
    accelerator = SimpleNamespace(
        gather=lambda x: x,
        gather_for_metrics=lambda x: x,
        reduce=lambda x, reduction="sum": x,
        sync_gradients=True,
        num_processes=1,
    )
    fake = SimpleNamespace(
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None),
        loss_type=loss_type,
        epsilon_low=eps,
        epsilon_high=eps,
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
    }
    return trl_grpo.GRPOTrainer._compute_loss(fake, None, inputs)


def ours(logp, old, ref, adv, mask, loss_type, beta, eps):
    per_token, _, _ = algo.clipped_surrogate(logp, old, adv, eps)
    if beta:
        per_token = per_token + beta * algo.k3_kl(logp, ref)
    return algo.aggregate(per_token, mask, loss_type, float(mask.sum()), mask.size(0))


@pytest.mark.parametrize("ours_type,trl_type", [("token_mean", "bnpo"), ("seq_mean", "grpo")])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_equal_trl(ours_type, trl_type, beta):
    g = torch.Generator().manual_seed(0)
    n, c = 6, 7
    base = -torch.rand(n, c, generator=g) * 2
    old = base + 0.3 * torch.randn(n, c, generator=g)  # ratios far enough from 1 for clipping to bite
    ref = base + 0.2 * torch.randn(n, c, generator=g)
    adv = torch.randn(n, generator=g)
    mask = torch.ones(n, c)
    mask[0, 4:] = 0
    mask[3, 2:] = 0
    a = base.clone().requires_grad_()
    b = base.clone().requires_grad_()
    loss_ours = ours(a, old, ref, adv, mask, ours_type, beta, 0.2)
    loss_trl = trl_loss(b, old, ref, adv, mask, trl_type, beta, 0.2)
    loss_ours.backward()
    loss_trl.backward()
    assert loss_ours.item() == pytest.approx(loss_trl.item(), rel=1e-6, abs=1e-7)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    clip = (torch.exp(a - old) > 1.2) & (adv.unsqueeze(1) > 0)
    assert clip.any()  # the case exercises clipping
