"""GRPO math on small literal tensors, against values worked out by hand."""

import math

import pytest
import torch

from vlm_grpo.core import algo


def test_advantage_one_demo_among_seven_failures():
    rewards = torch.tensor([[1.0, -1, -1, -1, -1, -1, -1, -1]])
    # mean -0.75; unbiased std sqrt(3.5 / 7) = 0.70711
    adv = algo.group_advantages(rewards, "group")
    assert adv[0, 0].item() == pytest.approx(1.75 / (math.sqrt(0.5) + 1e-4), abs=1e-5)  # +2.47
    assert adv[0, 1].item() == pytest.approx(-0.25 / (math.sqrt(0.5) + 1e-4), abs=1e-5)  # -0.35
    assert round(adv[0, 0].item(), 2) == 2.47 and round(adv[0, 1].item(), 2) == -0.35
    plain = algo.group_advantages(rewards, "none")
    assert plain[0, 0].item() == pytest.approx(1.75) and plain[0, 1].item() == pytest.approx(-0.25)


@algo.register_advantage("test_half")
def half(centred, std, eps):  # (B, G), (B, 1) -> (B, G): a scaling added from this module
    return centred / 2


def test_a_scaling_registered_by_name_serves_group_advantages():
    assert algo.ADVANTAGES.names()[:2] == ["group", "none"]
    rewards = torch.tensor([[1.0, -1, -1, -1]])  # mean -0.5
    assert algo.group_advantages(rewards, "test_half")[0].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    with pytest.raises(ValueError, match="unknown scale_rewards 'batch'; choose group, none"):
        algo.group_advantages(rewards, "batch")


def test_zero_variance_group_gives_zero_advantage():
    rewards = torch.tensor([[-1.0, -1, -1, -1], [1.0, 0, 0, -1]])
    adv = algo.group_advantages(rewards)
    assert torch.equal(adv[0], torch.zeros(4))
    assert torch.isfinite(adv).all()


def test_sampled_group_stats_ignore_injected_rows():
    rewards = torch.tensor([[1.0, 1.0, 0.0, -1.0]])
    sampled = torch.tensor([[False, True, True, True]])  # row 0 injected
    adv = algo.group_advantages(rewards, "none", sampled)
    assert adv[0].tolist() == pytest.approx([1.0, 1.0, 0.0, -1.0])  # mean of sampled rows = 0
    scaled = algo.group_advantages(rewards, "group", sampled)
    assert scaled[0, 0].item() == pytest.approx(1.0 / (1.0 + 1e-4))  # std of (1, 0, -1) = 1


def test_sampled_std_is_floored_at_the_whole_groups():
    # Demonstrations at 1, sampled rows at 0.5 x5 and 0.51: the sampled std alone is 0.0041.
    rewards = torch.tensor([[1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.51]])
    sampled = torch.tensor([[False, False, True, True, True, True, True, True]])
    adv = algo.group_advantages(rewards, "group", sampled)
    sampled_mean = (0.5 * 5 + 0.51) / 6
    whole_std = rewards.std().item()  # 0.2303
    assert adv[0, 0].item() == pytest.approx((1.0 - sampled_mean) / (whole_std + 1e-4))  # 2.16, not 119
    assert adv.abs().max().item() < 3


def test_sampled_stats_fall_back_when_sampled_rows_agree():
    rewards = torch.tensor([[1.0, -1.0, -1.0, -1.0]])
    sampled = torch.tensor([[False, True, True, True]])
    adv = algo.group_advantages(rewards, "group", sampled)
    whole_std = torch.tensor([1.0, -1, -1, -1]).std().item()  # 1.0
    assert adv[0, 0].item() == pytest.approx(2.0 / (whole_std + 1e-4))  # bounded, not 2 / 1e-4
    assert adv[0, 1:].abs().max().item() == 0.0


def test_clipping_inactive_and_active():
    logp = torch.log(torch.tensor([[0.5, 0.9]]))
    old = torch.log(torch.tensor([[0.5, 0.6]]))  # ratios 1.0 and 1.5
    loss, ratio, clipped = algo.clipped_surrogate(logp, old, torch.tensor([2.0]), 0.2)
    assert ratio[0].tolist() == pytest.approx([1.0, 1.5])
    assert loss[0].tolist() == pytest.approx([-2.0, -1.2 * 2.0])  # second token clipped at 1.2
    assert clipped[0].tolist() == [False, True]
    # Negative advantage: a ratio above 1+eps is not clipped (min picks the unclipped, larger loss).
    loss, _, clipped = algo.clipped_surrogate(logp, old, torch.tensor([-1.0]), 0.2)
    assert loss[0].tolist() == pytest.approx([1.0, 1.5]) and clipped[0].tolist() == [False, False]
    # Ratio below 1-eps with negative advantage is clipped at 0.8.
    loss, _, clipped = algo.clipped_surrogate(
        torch.log(torch.tensor([[0.3]])), torch.log(torch.tensor([[0.6]])), torch.tensor([-1.0]), 0.2
    )
    assert loss.item() == pytest.approx(0.8) and clipped.item()


def test_clipped_tokens_get_no_gradient():
    logp = torch.log(torch.tensor([[0.9]])).requires_grad_()
    old = torch.log(torch.tensor([[0.6]]))
    loss, _, _ = algo.clipped_surrogate(logp, old, torch.tensor([1.0]), 0.2)
    loss.sum().backward()
    assert logp.grad.item() == 0.0


def test_k3_kl():
    logp = torch.log(torch.tensor([0.5, 0.2]))
    ref = torch.log(torch.tensor([0.5, 0.4]))
    kl = algo.k3_kl(logp, ref)
    assert kl[0].item() == pytest.approx(0.0)
    assert kl[1].item() == pytest.approx(2.0 - math.log(2.0) - 1)


def test_luffy_gradient_is_analytic():
    # d/dtheta of -(p / (p + gamma)) * A with p = exp(logp): -A * gamma * p / (p + gamma)^2 per unit of logp.
    p, gamma, adv = 0.05, 0.1, 1.5
    logp = torch.tensor([[math.log(p)]], requires_grad=True)
    loss = algo.luffy_surrogate(logp, torch.tensor([adv]), gamma)
    assert loss.item() == pytest.approx(-(p / (p + gamma)) * adv)
    loss.sum().backward()
    assert logp.grad.item() == pytest.approx(-adv * gamma * p / (p + gamma) ** 2)
    # Through a parameter: logp = theta * x, so dL/dtheta = dL/dlogp * x.
    theta = torch.tensor(0.7, requires_grad=True)
    x = math.log(p) / 0.7
    algo.luffy_surrogate((theta * x).view(1, 1), torch.tensor([adv]), gamma).sum().backward()
    assert theta.grad.item() == pytest.approx(-adv * gamma * p / (p + gamma) ** 2 * x, rel=1e-5)


# ------------------------------------------------------------------ TRL's ratio variants, by hand
def test_sequence_level_ratio_is_the_exp_of_the_mean_log_ratio():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    old = torch.log(torch.tensor([[0.25, 0.4, 0.1]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding
    ratio = algo.importance_ratio(logp, old, mask, "sequence")
    assert ratio.shape == (1, 1)
    assert ratio.item() == pytest.approx(math.exp((math.log(2.0) + math.log(0.5)) / 2))  # = 1
    loss, per_token_ratio, _ = algo.clipped_surrogate(logp, old, torch.tensor([3.0]), 0.2, level="sequence", mask=mask)
    assert loss.shape == (1, 3) and torch.allclose(loss, torch.full((1, 3), -3.0))
    assert torch.allclose(per_token_ratio, torch.ones(1, 3))


def test_delta_caps_the_ratio_for_negative_advantages():
    logp, old = torch.log(torch.tensor([[0.9]])), torch.log(torch.tensor([[0.3]]))  # ratio 3
    plain, _, _ = algo.clipped_surrogate(logp, old, torch.tensor([-1.0]), 0.2)
    capped, _, clipped = algo.clipped_surrogate(logp, old, torch.tensor([-1.0]), 0.2, delta=1.5)
    assert plain.item() == pytest.approx(3.0) and capped.item() == pytest.approx(1.5)
    positive, _, _ = algo.clipped_surrogate(logp, old, torch.tensor([1.0]), 0.2, delta=1.5)
    assert positive.item() == pytest.approx(-1.2)  # positive advantages: the usual clip decides


IS_TRAINER = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
IS_ENGINE = torch.tensor([[-1.0, -1.0, -2.0], [-0.5, -1.0, 0.0]])
IS_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1's last token was not sampled
# token log-ratios: row 0: 0, -1, 1.5 (sum 0.5); row 1: -0.5, 0 (sum -0.5)


@pytest.mark.parametrize(
    "mode,low,high,expected",
    [
        ("token_truncate", None, 2.0, [[1.0, math.exp(-1.0), 2.0], [math.exp(-0.5), 1.0, 1.0]]),
        ("token_truncate", 0.5, 2.0, [[1.0, 0.5, 2.0], [math.exp(-0.5), 1.0, 1.0]]),
        ("token_mask", 0.5, 2.0, [[1.0, 0.0, 0.0], [math.exp(-0.5), 1.0, 1.0]]),
        ("sequence_truncate", None, 1.5, [[1.5, 1.5, 1.5], [math.exp(-0.5)] * 2 + [1.0]]),
        ("sequence_mask", 0.7, 3.0, [[math.exp(0.5)] * 3, [0.0, 0.0, 1.0]]),
        ("sequence_mask", None, None, [[math.exp(0.5)] * 3, [math.exp(-0.5)] * 2 + [1.0]]),
        ("token_truncate", None, None, [[1.0, math.exp(-1.0), math.exp(1.5)], [math.exp(-0.5), 1.0, 1.0]]),
    ],
)
def test_engine_is_weights_bound_the_token_or_row_ratio_and_leave_unsampled_tokens_at_one(mode, low, high, expected):
    from vlm_grpo.core.algo import engine_is_weights

    w = engine_is_weights(IS_TRAINER, IS_ENGINE, IS_MASK, mode, low, high)
    assert torch.allclose(w, torch.tensor(expected))


@pytest.mark.parametrize(
    "low, high, token, sequence",
    [
        (0.5, 2.0, 2 / 5, 0.0),  # tokens e^-1 and e^1.5 fall outside; the rows' e^0.5 and e^-0.5 do not
        (0.7, 1.5, 3 / 5, 1.0),  # e^-0.5 too; both rows fall outside, so every sampled token changes
        (None, None, 0.0, 0.0),
    ],
)
def test_each_modes_share_of_changed_tokens(low, high, token, sequence):
    shares = algo.engine_is_changed_shares(IS_TRAINER, IS_ENGINE, IS_MASK, low, high)
    assert shares == pytest.approx(
        {"token_truncate": token, "token_mask": token, "sequence_truncate": sequence, "sequence_mask": sequence}
    )


def test_engine_is_ratios_are_raw_per_token_or_the_rows_product():
    from vlm_grpo.core.algo import engine_is_ratios

    per_token = engine_is_ratios(IS_TRAINER, IS_ENGINE, IS_MASK, "token")
    assert torch.allclose(per_token, torch.tensor([[1.0, math.exp(-1.0), math.exp(1.5)], [math.exp(-0.5), 1.0, 1.0]]))
    per_row = engine_is_ratios(IS_TRAINER, IS_ENGINE, IS_MASK, "sequence")
    assert torch.allclose(per_row, torch.tensor([[math.exp(0.5)], [math.exp(-0.5)]]))


def test_logprob_mismatch_on_literal_log_probs():
    from vlm_grpo.core.algo import logprob_mismatch

    trainer = torch.tensor([[-1.0, -2.0], [-3.0, 0.0]])
    engine = torch.tensor([[-1.5, -2.0], [-2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = logprob_mismatch(trainer, engine, mask)
    diffs = torch.tensor([0.5, 0.0, -1.0])
    assert out["logp_gap_mean"] == pytest.approx(0.5) and out["logp_gap_max"] == pytest.approx(1.0)
    assert out["kl"] == pytest.approx(float((diffs.exp() - 1 - diffs).mean()))
    assert logprob_mismatch(trainer, engine, torch.zeros(2, 2)) == {
        "logp_gap_mean": 0.0,
        "logp_gap_max": 0.0,
        "kl": 0.0,
    }
