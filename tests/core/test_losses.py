"""The loss on small literal tensors, against values worked out by hand: the clipped surrogate and its
statistics, the KL term, LUFFY's shaping of injected rows, the variants; a variant added from this
module by one decorated function, computed and trained with by its name."""

import json
import math

import pytest
import torch

import support
from vlm_grpo.config import ConfigError, LossSettings, load_config
from vlm_grpo.core import algo, losses
from vlm_grpo.core.losses import LossInputs, grpo_loss, register_loss

# Row 0: four tokens of loss 1; row 1: one token of loss 4 (its other three are padding).
PER_TOKEN = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1.0, 1, 1, 1], [1, 0, 0, 0]])


def _inputs(mask=MASK, tokens=5.0, rows=2, **extra) -> LossInputs:
    return LossInputs(torch.zeros(len(mask)), mask, tokens, rows, **extra)


def test_the_shipped_names_are_trls():
    assert {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo"} <= set(losses.LOSSES.names())
    assert LossSettings().loss_type == "bnpo"  # the default: every token of the minibatch weighs the same


# ------------------------------------------------------------------ reductions
def test_bnpo_is_the_token_mean_over_the_minibatch():
    assert losses.bnpo(PER_TOKEN, _inputs()).item() == pytest.approx((4 + 4) / 5)


def test_grpo_is_the_mean_over_rows_of_each_rows_token_mean():
    assert losses.grpo(PER_TOKEN, _inputs()).item() == pytest.approx((1 + 4) / 2)


def test_dr_grpo_divides_by_rows_times_max_length():
    # (4 + 4) / (2 rows x 5 tokens), whatever the rows' lengths; one row of the two gives its share only.
    assert losses.dr_grpo(PER_TOKEN, _inputs(max_completion_length=5)).item() == pytest.approx(0.8)
    assert losses.dr_grpo(PER_TOKEN[:1], _inputs(MASK[:1], max_completion_length=5)).item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="max_completion_length"):
        losses.dr_grpo(PER_TOKEN, _inputs())


def test_dapo_divides_by_the_steps_tokens_per_minibatch():
    # The step holds 20 loss tokens in 2 minibatches: 10 per minibatch, whatever this minibatch holds.
    assert losses.dapo(PER_TOKEN, _inputs(step_tokens=10.0)).item() == pytest.approx(8 / 10)
    # A step of one minibatch: the same as bnpo.
    assert losses.dapo(PER_TOKEN, _inputs()).item() == losses.bnpo(PER_TOKEN, _inputs()).item()


@pytest.mark.parametrize("name", ["bnpo", "grpo", "dr_grpo", "dapo"])
def test_micro_batches_accumulate_to_the_full_minibatch(name):
    per_token = torch.rand(6, 5)
    mask = (torch.rand(6, 5) > 0.3).float()
    mask[:, 0] = 1
    reduce = losses.LOSSES.get(name).reduce
    extra = {"max_completion_length": 5, "step_tokens": 17.0}
    tokens = float(mask.sum())
    full = reduce(per_token, _inputs(mask, tokens, 6, **extra))
    parts = sum(reduce(per_token[i : i + 2], _inputs(mask[i : i + 2], tokens, 6, **extra)) for i in (0, 2, 4))
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)


# ------------------------------------------------------------------ surrogates
def _two_tokens(adv, old=(0.5, 0.3)):
    logp = torch.log(torch.tensor([[0.5, 0.9]])).requires_grad_()
    inputs = LossInputs(torch.tensor([adv]), torch.ones(1, 2), 2.0, 1, old_logp=torch.log(torch.tensor([old])))
    return logp, inputs  # ratios 1 and 3


def test_cispo_caps_the_ratio_without_cutting_the_gradient():
    logp, inputs = _two_tokens(1.0)
    terms = losses.cispo_surrogate(logp, inputs, LossSettings(loss_type="cispo", epsilon_high=2.0))
    # -min(ratio, 2) x A x log p: weights 1 and 2 (no gradient through them)
    assert terms.loss[0].tolist() == pytest.approx([-math.log(0.5), -2 * math.log(0.9)])
    assert terms.ratio[0].tolist() == pytest.approx([1.0, 3.0])
    assert terms.clipped[0].tolist() == [False, True]
    terms.loss.sum().backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -2.0])  # the capped token still learns
    # A negative advantage: the same cap, counted as clipped only for A > 0 (TRL's cispo_clip_ratio).
    logp, inputs = _two_tokens(-1.0)
    terms = losses.cispo_surrogate(logp, inputs, LossSettings(loss_type="cispo", epsilon_high=2.0))
    assert terms.loss[0].tolist() == pytest.approx([math.log(0.5), 2 * math.log(0.9)])
    assert terms.clipped[0].tolist() == [False, False]


def test_sapo_gates_the_ratio_smoothly():
    logp, inputs = _two_tokens(1.0)
    terms = losses.sapo_surrogate(logp, inputs, LossSettings(loss_type="sapo"))
    sig2 = 1 / (1 + math.exp(-2.0))  # sigmoid(tau (ratio - 1)) at ratio 3, tau 1
    assert terms.loss[0].tolist() == pytest.approx([-0.5 * 4, -sig2 * 4])
    assert not terms.clipped.any()
    terms.loss.sum().backward()
    # d/dlogp = -sigmoid'(tau (r - 1)) x r x 4 x A: -1 at ratio 1 (PPO's gradient there), smaller past it
    # per unit of ratio, where PPO's clip would give none.
    assert logp.grad[0].tolist() == pytest.approx([-1.0, -sig2 * (1 - sig2) * 3 * 4])
    # A negative advantage takes sapo_temperature_neg: -sigmoid(0) x 4 / 1.05 x (-1) at ratio 1.
    logp, inputs = _two_tokens(-1.0)
    terms = losses.sapo_surrogate(logp, inputs, LossSettings(loss_type="sapo", sapo_temperature_neg=1.05))
    assert terms.loss[0, 0].item() == pytest.approx(2 / 1.05)


# ------------------------------------------------------------------ the clipped surrogate and its statistics
# old = logp - delta: ratios exp(0.1), exp(0.3) for row 0 (A = +1); exp(-0.5) for row 1 (A = -1, one token).
LOGP = [[-0.5, -1.0], [-0.2, -0.3]]
OLD = [[-0.6, -1.3], [0.3, -0.3]]
LOSS_MASK = [[1.0, 1.0], [1.0, 0.0]]


def _loss(settings, ref=None, injected=(False, True)):
    logp = torch.tensor(LOGP, requires_grad=True)
    stats = algo.LossStats()
    inputs = LossInputs(
        torch.tensor([1.0, -1.0]),
        torch.tensor(LOSS_MASK),
        minibatch_tokens=3.0,
        minibatch_rows=2,
        old_logp=torch.tensor(OLD),
        ref_logp=None if ref is None else torch.tensor(ref),
        injected=torch.tensor(injected),
    )
    loss = grpo_loss(logp, inputs, settings, stats)
    return loss, stats, logp


def test_grpo_loss_is_the_clipped_surrogate_averaged_over_tokens():
    loss, stats, _ = _loss(LossSettings(epsilon=0.2, beta=0.0, loss_type="bnpo"))
    # row 0 (A=+1): -exp(0.1) unclipped, -1.2 clipped (ratio exp(0.3) > 1.2); row 1 (A=-1): ratio exp(-0.5)
    # below 0.8, so -min(-0.607, -0.8) = 0.8, clipped.
    expected = (-math.exp(0.1) - 1.2 + 0.8) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats.total("loss_policy") == pytest.approx(expected, abs=1e-6)
    assert stats.mean("ratio") == pytest.approx((math.exp(0.1) + math.exp(0.3) + math.exp(-0.5)) / 3, abs=1e-6)
    assert stats.mean("ratio_injected") == pytest.approx(math.exp(-0.5), abs=1e-6)
    assert stats.mean("clip") == pytest.approx(2 / 3) and stats.mean("clip_injected") == 1.0
    assert stats.mean("clip_sampled") == pytest.approx(0.5)
    assert stats.mean("logp_injected") == pytest.approx(-0.2)
    assert math.isnan(stats.mean("kl"))  # no reference: no KL statistic


def test_loss_policy_excludes_the_kl_term_which_the_loss_includes():
    ref = [[-0.5, -0.5], [-0.2, -0.3]]  # differs from the policy on row 0, token 1 only
    settings = LossSettings(epsilon=0.2, beta=0.5, loss_type="bnpo")
    loss, stats, _ = _loss(settings, ref=ref)
    kl = math.exp(-0.5 - -1.0) - (-0.5 - -1.0) - 1  # k3 on the one differing token
    assert stats.mean("kl") == pytest.approx(kl / 3, abs=1e-6)
    assert loss.item() == pytest.approx(stats.total("loss_policy") + 0.5 * kl / 3, abs=1e-6)


def test_luffy_shapes_injected_rows_without_clipping():
    settings = LossSettings(off_policy="luffy", luffy_gamma=0.1)
    loss, stats, logp = _loss(settings)
    p = math.exp(-0.2)
    expected = (-math.exp(0.1) - 1.2 + p / (p + 0.1)) / 3  # row 1: -(p/(p+gamma)) * A with A = -1
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats.mean("clip_injected") == 0.0
    loss.backward()
    assert logp.grad[1, 0].item() != 0.0  # the shaped term has a gradient where the clipped one had none


def test_old_logp_none_means_ratio_one():
    logp = torch.tensor(LOGP, requires_grad=True)
    stats = algo.LossStats()
    inputs = LossInputs(
        torch.tensor([1.0, -1.0]), torch.tensor(LOSS_MASK), 3.0, 2, injected=torch.tensor([False, False])
    )
    grpo_loss(logp, inputs, LossSettings(loss_type="grpo"), stats)
    assert stats.mean("ratio") == 1.0 and stats.mean("clip") == 0.0


# ------------------------------------------------------------------ grpo_loss under each name
CLIPPED = [-math.exp(0.1), -1.2, 0.8]  # the clipped surrogate of the three tokens, worked out above


def _grpo_loss(settings, **extra):
    inputs = LossInputs(torch.tensor([1.0, -1.0]), torch.tensor(LOSS_MASK), 3.0, 2, old_logp=torch.tensor(OLD), **extra)
    stats = algo.LossStats()
    return grpo_loss(torch.tensor(LOGP, requires_grad=True), inputs, settings, stats).item(), stats


@pytest.mark.parametrize(
    "name,expected",
    [
        ("bnpo", sum(CLIPPED) / 3),
        ("grpo", ((CLIPPED[0] + CLIPPED[1]) / 2 + CLIPPED[2]) / 2),
        ("dr_grpo", sum(CLIPPED) / (2 * 4)),
        ("dapo", sum(CLIPPED) / 6),
    ],
)
def test_grpo_loss_under_each_name(name, expected):
    loss, stats = _grpo_loss(LossSettings(loss_type=name), max_completion_length=4, step_tokens=6.0)
    assert loss == pytest.approx(expected, abs=1e-6)
    assert stats.total("loss_policy") == pytest.approx(expected, abs=1e-6)
    assert stats.mean("clip") == pytest.approx(2 / 3)  # row 0's second token, row 1's


def test_cispo_and_sapo_through_grpo_loss():
    logp = torch.tensor(LOGP)
    # cispo: -min(r, 5) x A x log p summed, over dapo's 6 tokens; no ratio reaches the cap.
    cispo = (math.exp(0.1) * 0.5 + math.exp(0.3) * 1.0 - math.exp(-0.5) * 0.2) / 6
    loss, stats = _grpo_loss(LossSettings(loss_type="cispo", epsilon_high=5.0), step_tokens=6.0)
    assert loss == pytest.approx(cispo, abs=1e-6) and stats.mean("clip") == 0.0
    # sapo: -sigmoid(tau (r - 1)) 4 / tau x A per token, then grpo's mean of row means.
    ratios = torch.exp(logp - torch.tensor(OLD))
    gate = [torch.sigmoid(1.0 * (ratios[0, k] - 1)).item() * 4 for k in (0, 1)]
    neg = torch.sigmoid(1.05 * (ratios[1, 0] - 1)).item() * 4 / 1.05
    loss, _ = _grpo_loss(LossSettings(loss_type="sapo"))
    assert loss == pytest.approx(((-gate[0] - gate[1]) / 2 + neg) / 2, abs=1e-6)


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown loss_type 'sum'; choose .*bnpo"):
        _grpo_loss(LossSettings(loss_type="sum"))


# ------------------------------------------------------------------ a variant from this module
@register_loss("test_row_sum")
def row_sum(per_token, inputs):  # (n, C) -> (): each row's token sum, averaged over the minibatch's rows
    return (per_token * inputs.loss_mask).sum() / inputs.minibatch_rows


def test_a_registered_variant_is_computed_by_its_name():
    loss, stats = _grpo_loss(LossSettings(loss_type="test_row_sum"))
    assert loss == pytest.approx(sum(CLIPPED) / 2, abs=1e-6)
    assert stats.mean("clip") == pytest.approx(2 / 3)  # the shared statistics come with it


def test_a_registered_variant_trains_by_its_name(tmp_path):
    from vlm_grpo.training.trainer import Trainer

    overrides = [f"output_dir={tmp_path}", "max_steps=1", "save_steps=1", "report_to=[]", "loss_type=test_row_sum"]
    Trainer(load_config(None, support.TINY + overrides)).train()
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert math.isfinite(last["loss/policy"])


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("old,new", [("token_mean", "bnpo"), ("seq_mean", "grpo")])
def test_old_names_stop_with_the_new_one(old, new):
    with pytest.raises(ConfigError, match=f"loss_type={old} is now loss_type={new}"):
        load_config(None, [f"loss_type={old}"])


def test_names_are_checked_against_the_registries():

    with pytest.raises(ConfigError, match="loss_type='sum' is not one of .*bnpo, cispo, dapo"):
        load_config(None, ["loss_type=sum"])
    with pytest.raises(ConfigError, match="scale_rewards='batch' is not one of group, none"):
        load_config(None, ["scale_rewards=batch"])
    assert load_config(None, ["loss_type=test_row_sum"]).loss_type == "test_row_sum"


def test_cispo_needs_its_cap():
    with pytest.raises(ConfigError, match="loss_type=cispo caps the ratio itself at epsilon_high"):
        load_config(None, ["loss_type=cispo"])
    assert load_config(None, ["loss_type=cispo", "epsilon_high=5.0"]).epsilon_high == 5.0
