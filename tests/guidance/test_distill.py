"""On-policy distillation: a teacher's per-token signal on the policy's own samples, on literal tensors
(no signal from a teacher equal to the policy; a preferred token's advantage and gradient up; no signal
on demonstrations), the tokenizer check, the `distill` section, and short runs from a config and from
the Python API."""

import json
import math

import pytest
import torch
from transformers import PreTrainedTokenizerFast

import support
from vlm_grpo import GRPOConfig, GRPOTrainer
from vlm_grpo.config import ConfigError, load_config
from vlm_grpo.config_sections import Schedule
from vlm_grpo.core.losses import LOSSES, LossInputs, grpo_loss
from vlm_grpo.guidance.distill import DistillConfig, check_same_tokenizer, taught_tokens, teacher_terms
from vlm_grpo.lab.models import path_of
from vlm_grpo.models.tiny import build_tokenizer
from vlm_grpo.rollout import PromptBatch, Rollout, StepBatch
from vlm_grpo.training.trainer import Trainer

LOSS = load_config(None, [])  # the loss's default settings (bnpo, clip 0.2)


def step_loss(logp, token_advantages=None, teacher_logp=None, teacher_weight=None, settings=LOSS):
    """The loss of one micro-batch of zero row advantages, every token in the loss; rollout-time log-probs
    equal to `logp`'s values (ratio 1, the first update of a step)."""
    inputs = LossInputs(
        torch.zeros(logp.size(0)),
        torch.ones_like(logp),
        float(logp.numel()),
        logp.size(0),
        old_logp=logp.detach().clone(),
        token_advantages=token_advantages,
        teacher_logp=teacher_logp,
        teacher_weight=teacher_weight,
    )
    return grpo_loss(logp, inputs, settings)


def test_a_teacher_equal_to_the_policy_gives_no_signal():
    s = torch.log(torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.1, 0.3]]))
    taught = torch.ones(2, 3, dtype=torch.bool)
    advantages, weight = teacher_terms(s, s.clone(), taught, 1.0, "both")
    assert torch.equal(advantages, torch.zeros(2, 3)) and torch.equal(weight, torch.ones(2, 3))
    logp = s.clone().requires_grad_()
    loss = step_loss(logp, advantages, s.clone(), weight)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(logp.grad, torch.zeros(2, 3))


def test_a_teacher_that_prefers_the_sampled_token_raises_it():
    # One row of two tokens: the teacher prefers the first (0.8 against the policy's 0.2), not the second.
    s = torch.log(torch.tensor([[0.2, 0.6]]))
    t = torch.log(torch.tensor([[0.8, 0.3]]))
    taught = torch.ones(1, 2, dtype=torch.bool)
    advantages, _ = teacher_terms(s, t, taught, 0.5, "advantage")
    assert advantages[0].tolist() == pytest.approx([0.5 * math.log(4), 0.5 * math.log(0.5)])
    for mode in ("advantage", "loss", "both"):
        advantages, weight = teacher_terms(s, t, taught, 0.5, mode)
        logp = s.clone().requires_grad_()
        step_loss(logp, advantages, t if weight is not None else None, weight).backward()
        # Gradient descent moves log p against the gradient: up for the preferred token, down for the other.
        assert logp.grad[0, 0] < 0 < logp.grad[0, 1], mode


def test_the_loss_term_is_the_weighted_k3_kl_to_the_teacher():
    s = torch.log(torch.tensor([[0.2, 0.6]]))
    t = torch.log(torch.tensor([[0.8, 0.3]]))
    _, weight = teacher_terms(s, t, torch.tensor([[True, False]]), 0.5, "loss")
    loss = step_loss(s.clone().requires_grad_(), None, t, weight)
    k3 = 4.0 - math.log(4) - 1  # exp(t - s) - (t - s) - 1 on the first token; the second is not taught
    assert float(loss) == pytest.approx(0.5 * k3 / 2)  # bnpo: the sum over the micro-batch's 2 tokens


@pytest.mark.parametrize("loss_type", sorted(LOSSES.names()))
def test_a_zero_per_token_term_leaves_every_variant_as_it_was(loss_type):
    settings = load_config(None, [f"loss_type={loss_type}", "epsilon_high=5.0", "max_completion_length=3"])
    logp = torch.log(torch.tensor([[0.2, 0.5, 0.9], [0.7, 0.1, 0.3]]))
    old = logp + torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1]])

    def loss(token_advantages):
        inputs = LossInputs(
            torch.tensor([1.0, -0.5]),
            torch.ones(2, 3),
            6.0,
            2,
            old_logp=old,
            token_advantages=token_advantages,
            max_completion_length=3,
        )
        return grpo_loss(logp, inputs, settings)

    assert torch.equal(loss(torch.zeros(2, 3)), loss(None))
    assert not torch.equal(loss(torch.full((2, 3), 0.5)), loss(None))


def test_demonstrations_are_not_distilled():
    rollout = Rollout(
        PromptBatch([None], {}),
        3,
        torch.ones(3, 2, dtype=torch.long),
        torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
        torch.zeros(3, dtype=torch.bool),
        ["a", "b", "c"],
        [None] * 3,
        injected=torch.tensor([False, True, False]),
    )
    loss_mask = rollout.completion_mask.clone()
    loss_mask[2, 1] = 0  # e.g. a tool's token: out of the loss, so not distilled
    taught = taught_tokens(StepBatch(rollout, torch.zeros(3), loss_mask))
    assert taught.tolist() == [[True, True], [False, False], [True, False]]


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line():
    tiny = build_tokenizer()
    lab = PreTrainedTokenizerFast(tokenizer_file=str(path_of("lab-base-cold") / "tokenizer.json"))
    check_same_tokenizer(tiny, tiny, "tiny-qwen2-vl")  # the same: nothing to say
    with pytest.raises(ConfigError) as error:
        check_same_tokenizer(tiny, lab, "lab-base-cold")
    message = str(error.value)
    assert "\n" not in message and "distill.teacher=lab-base-cold has another tokenizer" in message
    assert f"({len(lab.get_vocab())} tokens against {len(tiny.get_vocab())}" in message


def test_lab_teacher_cannot_teach_the_tool_use_base():
    """lab-base-tools added the call tags as tokens; lab-teacher never did (docs/results.md, section 7)."""
    tools, teacher = (
        PreTrainedTokenizerFast(tokenizer_file=str(path_of(name) / "tokenizer.json"))
        for name in ("lab-base-tools", "lab-teacher")
    )
    assert {"<tool_call>", "</tool_call>"} <= set(tools.get_vocab()) - set(teacher.get_vocab())
    with pytest.raises(ConfigError, match="distill.teacher=lab-teacher has another tokenizer"):
        check_same_tokenizer(tools, teacher, "lab-teacher")


@pytest.mark.slow
def test_a_run_with_a_teacher_of_another_tokenizer_stops_at_start_up(tmp_path):
    cfg = load_config(None, support.TINY + [f"output_dir={tmp_path}", "distill.teacher=lab-base-cold"])
    with pytest.raises(ConfigError, match="distill.teacher=lab-base-cold has another tokenizer"):
        Trainer(cfg)


def test_the_distill_section():
    cfg = load_config(None, [])
    assert cfg.distill.teacher is None and cfg.distill.mode == "advantage"
    assert cfg.distill.weight(30, 50, 0.0) == 1.0  # constant 1 by default
    decaying = load_config(None, ["distill.teacher=tiny-qwen2-vl", "distill.coef.schedule=linear_decay"])
    assert [decaying.distill.weight(s, 10, 0.0) for s in (0, 7, 9)] == pytest.approx([1.0, 0.0, 0.0])
    assert DistillConfig(coef=0.3).coef == Schedule(value=0.3, initial=1.0, final=0.0)  # a number: a constant
    with pytest.raises(ConfigError) as error:
        bad = ["distill.teacher=no-such-model", "distill.mode=sideways", "distill.coef=2"]
        load_config(None, [*bad, "skip_zero_advantage_groups=true"])
    for part in ("distill.mode='sideways'", "distill.coef.value=2.0", "distill.teacher: unknown model", "skip_zero"):
        assert part in str(error.value)


@pytest.mark.slow
def test_a_run_from_a_config_distills(tmp_path):
    """tiny-qwen2-vl is built alike each time: a teacher equal to the policy at step 1 (reverse KL 0),
    then the policy moves away from it."""
    extra = [f"output_dir={tmp_path}", "max_steps=2", "save_steps=2", "report_to=[]", "distill.mode=both"]
    trainer = Trainer(load_config(None, support.TINY + extra + ["distill.teacher=tiny-qwen2-vl"]))
    assert [remedy.name for remedy in trainer.remedies][-1] == "distill"
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["distill/reverse_kl"] == 0.0 and lines[1]["distill/reverse_kl"] != 0.0
    for line in lines:
        assert line["distill/coef"] == 1.0 and line["time/teacher_s"] > 0
        assert line["distill/teacher_tokens"] >= line["distill/tokens"] > 0 and line["distill/teacher_kl"] >= 0


@pytest.mark.slow
def test_a_run_from_the_python_api_distills(tmp_path):
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        num_generations=2,
        prompts_per_step=2,
        num_iterations=1,  # one update per step: the rollout-time log-probs are taken for the teacher's signal
        max_completion_length=6,
        progress=False,
        report_to=[],
        distill={"teacher": "tiny-qwen2-vl", "coef": {"schedule": "linear_decay", "decay_fraction": 0.5}},
    )
    rows = [{"image": image, "question": "How many objects are there?", "answer": 3} for image in images(4)]
    GRPOTrainer(model="tiny-qwen2-vl", args=args, train_dataset=rows).train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["distill/coef"] for line in lines] == [1.0, 0.0]  # decayed to 0 by step 2: no teacher pass
    assert lines[0]["distill/tokens"] > 0 and lines[1]["distill/tokens"] == 0


def images(n: int) -> list:
    return [sample.image for sample in support.lab_samples(n)]
