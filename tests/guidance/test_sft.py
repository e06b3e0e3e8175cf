"""Supervised signal from demonstrations: the warm-up, CHORD's weighted term, HPT's gate."""

import json

import pytest
import torch

import support
from vlm_grpo.config import ConfigError, load_config
from vlm_grpo.config_sections import Schedule
from vlm_grpo.core.algo import LossStats
from vlm_grpo.data import Sample
from vlm_grpo.guidance.sft import SftConfig, SupervisedPlan, Supervisor
from vlm_grpo.models.tiny import build_tokenizer
from vlm_grpo.rollout import PromptBatch, Rollout
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import DEFAULT
from vlm_grpo.training.trainer import Trainer


def test_coef_follows_the_injection_schedules():
    assert SftConfig().weight(0, 100, 0.0) == 0.0  # off by default
    assert SftConfig(coef=0.25).weight(50, 100, 0.0) == 0.25
    decay = SftConfig(coef=Schedule("linear_decay", initial=0.8, final=0.0, decay_fraction=0.5))
    assert [decay.weight(s, 100, 0.0) for s in (0, 25, 50, 99)] == pytest.approx([0.8, 0.4, 0.0, 0.0])
    adaptive = SftConfig(coef=Schedule("adaptive", value=1.0, low=0.2, high=0.6))
    assert [adaptive.weight(0, 100, r) for r in (0.1, 0.4, 0.7)] == pytest.approx([1.0, 0.5, 0.0])


def three_groups(injected_row_correct=False):
    """Group 0: one correct sampled row; group 1: none correct; group 2: only an injected row correct."""
    G = 2
    scorer = Scorer(["answer"], None, DEFAULT)
    samples = [Sample(f"s{i}", None, "How many?", 3, "test") for i in range(3)]
    texts = ["3", "4", "5", "x", "3", "4"]
    injected = torch.tensor([False, False, False, False, True, False])
    return Rollout(
        PromptBatch(samples, {}),
        G,
        torch.full((6, 2), 7),
        torch.ones(6, 2),
        torch.zeros(6, dtype=torch.bool),
        texts,
        [scorer(t, 3) for t in texts],
        injected,
    )


def test_gate_takes_groups_without_a_correct_sampled_row():
    tok = build_tokenizer()
    supervisor = Supervisor(SftConfig(gate="no_success"), DEFAULT, tok, 1, tok.pad_token_id, seed=0)
    plan = supervisor.plan(three_groups(), 0, 10, 0.0)
    assert plan.gated.tolist() == [False, True, True]  # an injected correct row is no success
    assert plan.weights.tolist() == [0.0, 1.0, 1.0] and plan.coef == 0.0
    both = Supervisor(SftConfig(gate="no_success", coef=0.3), DEFAULT, tok, 1, tok.pad_token_id, seed=0)
    assert both.plan(three_groups(), 0, 10, 0.0).weights.tolist() == pytest.approx([0.3, 1.0, 1.0])
    # Demonstrations: the answer's tokens, then the end-of-turn token.
    assert plan.ids[0, : int(plan.mask[0].sum())].tolist() == tok("3", add_special_tokens=False)["input_ids"] + [1]
    # Each group is trained once per epoch: by the minibatch holding its first row.
    assert plan.groups_in(torch.tensor([3, 2, 5, 4]), 2).tolist() == [1, 2]
    assert plan.groups_in(torch.tensor([0, 1]), 2).tolist() == []  # group 0 has weight 0


def test_supervised_term_is_the_weighted_token_mean_nll():
    plan = SupervisedPlan(
        0.5,
        torch.tensor([0.5, 1.0]),
        torch.tensor([False, True]),
        torch.tensor([[4, 5, 0], [6, 7, 8]]),
        torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]),
    )
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.5, 0.5, 0.5]])).requires_grad_()
    losses, stats = [], LossStats()
    Supervisor.backward(
        plan, torch.tensor([0, 1]), 8, 5.0, lambda g, ids, mask: logp[g, : ids.size(1)], losses.append, stats
    )
    ln2 = torch.log(torch.tensor(2.0)).item()
    expected = (0.5 * (ln2 + 2 * ln2) + 1.0 * 3 * ln2) / 5  # padding never counts
    assert losses[0].item() == pytest.approx(expected)
    assert stats.mean("sft_nll") == pytest.approx(6 * ln2 / 5)
    none = []
    Supervisor.backward(plan, torch.tensor([], dtype=torch.long), 8, 0.0, lambda *a: 1 / 0, none.append, stats)
    assert none == []  # a minibatch without demonstrations to train runs nothing
    losses[0].backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.1, -0.1, 0.0], [-0.2, -0.2, -0.2]]))


def test_bad_sft_settings_are_reported_together():
    with pytest.raises(ConfigError) as err:
        load_config(
            None, ["max_steps=4", "sft.warmup_steps=-1", "sft.coef=1.5", "sft.gate=sometimes", "fsdp=full_shard"]
        )
    text = str(err.value)
    for part in ("sft.warmup_steps=-1", "sft.coef.value=1.5", "sft.gate", "fsdp=full_shard needs sft.coef=0"):
        assert part in text, part


TINY = [*support.TINY, "report_to=[]"]


@pytest.mark.slow
def test_warmup_steps_train_demonstrations_then_grpo_takes_over(tmp_path):
    extra = ["max_steps=4", "save_steps=4", "sft.warmup_steps=2", "warmup_ratio=0", "lr_scheduler_type=constant"]
    cfg = load_config(None, TINY + [f"output_dir={tmp_path}", *extra])
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [("sft/loss" in line, "reward/mean" in line) for line in lines] == [(True, False)] * 2 + [(False, True)] * 2
    assert lines[0]["sft/groups"] == 2 and lines[1]["sft/loss"] < lines[0]["sft/loss"]  # lr 1e-3 learns the format
    changed = sum(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert changed > 0


@pytest.mark.slow
def test_gate_removes_only_gated_groups_from_the_grpo_loss(tmp_path):
    cfg = load_config(
        None, TINY + [f"output_dir={tmp_path}", "max_steps=1", "save_steps=1", "sft.gate=no_success", "sft.coef=0.2"]
    )
    trainer = Trainer(cfg)
    rollout = trainer.draw(0).rollout
    sft = trainer.remedy("sft")
    plan = sft.current = sft.supervisor.plan(rollout, 0, 1, 0.0)
    G = rollout.group_size
    correct = torch.tensor([s.correct for s in rollout.scores]).view(-1, G)
    assert plan.gated.tolist() == (~correct.any(1)).tolist()
    mask = trainer.loss_mask(rollout)
    for group, gated in enumerate(plan.gated.tolist()):
        rows = slice(group * G, (group + 1) * G)
        assert torch.equal(mask[rows], torch.zeros_like(mask[rows]) if gated else rollout.completion_mask[rows])
    trainer.train()
    line = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["sft/groups"] == 2 and line["sft/coef"] == pytest.approx(0.2) and line["sft/loss"] > 0


@pytest.mark.slow
def test_a_coef_decayed_to_zero_trains_plain_grpo(tmp_path):
    extra = ["max_steps=3", "save_steps=3", "sft.coef.schedule=linear_decay", "sft.coef.decay_fraction=0.3"]
    Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", *extra])).train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["sft/coef"] for line in lines] == [0.5, 0.0, 0.0]
    assert [line["sft/groups"] for line in lines] == [2, 0, 0]
