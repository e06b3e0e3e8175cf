"""The seams every later feature plugs into: the loss function, the step batch, registries and plug-ins,
the Task interface, prompt styles built for a task, the evaluation summary and family adapters."""

import math

import numpy as np
import pytest
import torch

from vlm_grpo.config import LossSettings
from vlm_grpo.core import algo
from vlm_grpo.core.losses import LossInputs, grpo_loss
from vlm_grpo.data import DATASETS, BadSample
from vlm_grpo.evaluation.records import EvalSummary
from vlm_grpo.models import adapter_for_type, registered_models
from vlm_grpo.models.families import GENERIC, family_named
from vlm_grpo.registry import Registry
from vlm_grpo.rollout import PromptBatch, Rollout, StepBatch
from vlm_grpo.tasks import Score, Task, get_task
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import get_style

# ------------------------------------------------------------------ the loss, on literal tensors
LOGP = [[-0.5, -1.0], [-0.2, -0.3]]
# old = logp - delta: ratios exp(0.1), exp(0.3) for row 0; exp(-0.5) for row 1 (its 2nd token is masked).
OLD = [[-0.6, -1.3], [0.3, -0.3]]
MASK = [[1.0, 1.0], [1.0, 0.0]]


def _loss(settings, ref=None, injected=(False, True)):
    logp = torch.tensor(LOGP, requires_grad=True)
    stats = algo.LossStats()
    inputs = LossInputs(
        torch.tensor([1.0, -1.0]),
        torch.tensor(MASK),
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
    inputs = LossInputs(torch.tensor([1.0, -1.0]), torch.tensor(MASK), 3.0, 2, injected=torch.tensor([False, False]))
    grpo_loss(logp, inputs, LossSettings(loss_type="grpo"), stats)
    assert stats.mean("ratio") == 1.0 and stats.mean("clip") == 0.0


# ------------------------------------------------------------------ the step batch
def _rollout(lengths, G):
    n, width = len(lengths), max(lengths) + 2
    mask = torch.tensor([[1.0] * k + [0.0] * (width - k) for k in lengths])
    ids = torch.arange(n * width).view(n, width)
    scores = [Score(0.0, False, False, False, False, None)] * n
    prompts = PromptBatch([], {"input_ids": torch.zeros(n // G, 1, dtype=torch.long)})
    return Rollout(prompts, G, ids, mask, torch.zeros(n, dtype=torch.bool), [""] * n, scores)


def test_step_batch_cuts_micro_batches_to_their_longest_completion():
    rollout = _rollout([3, 1, 4, 2], G=2)
    batch = StepBatch(rollout, torch.tensor([1.0, -1.0, 0.5, -0.5]), rollout.completion_mask.clone())
    batch.old_logp = torch.full(rollout.completion_ids.shape, -1.0)
    micro = batch.select(torch.tensor([1, 3]))
    assert micro.completion_ids.shape == (2, 2) and micro.loss_mask.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert micro.advantages.tolist() == [-1.0, -0.5] and micro.old_logp.shape == (2, 2) and micro.ref_logp is None
    assert batch.tokens(torch.tensor([0, 2])) == 7.0


def test_epoch_minibatches_keep_groups_whole_and_cover_every_row_once():
    rollout = _rollout([1] * 12, G=4)
    batch = StepBatch(rollout, torch.zeros(12), rollout.completion_mask)
    torch.manual_seed(0)
    minibatches = batch.epoch_minibatches(4)
    assert sorted(torch.cat(minibatches).tolist()) == list(range(12))
    for rows in minibatches:
        assert len({int(r) // 4 for r in rows}) == 1  # one whole group per minibatch of G rows


# ------------------------------------------------------------------ registries and plug-ins
def test_registry_names_the_choices_and_refuses_a_second_entry():
    registry = Registry("widget")
    registry.register("a", 1)
    with pytest.raises(ValueError, match=r"unknown widget 'b'; choose a"):
        registry.get("b")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", 2)


def test_the_lab_registers_through_the_plugin_entry_point():
    assert {"lab-clevr", "lab-superclevr"} <= set(DATASETS.names())
    assert {"lab-base", "lab-base-cold", "tiny-qwen2-vl", "tiny-qwen2.5-vl"} <= set(registered_models())


# ------------------------------------------------------------------ tasks and styles
@pytest.mark.parametrize(
    ("value", "expected"),
    [(7, 7), (np.int64(3), 3), ("12", 12), (" <answer> 5 </answer> ", 5), ("-2", -2), ("<answer>4</answer>", 4)],
)
def test_counting_reads_row_answers(value, expected):
    assert get_task("counting").read_answer(value, "row#1") == expected


@pytest.mark.parametrize("value", ["seven", "3.5", True, None, "", "<answer></answer>", "1 2", [3]])
def test_counting_refuses_hostile_row_answers(value):
    with pytest.raises(BadSample, match="row#1: answer"):
        get_task("counting").read_answer(value, "row#1")


class LetterTask(Task):
    """A literal second task: one capital letter, read from answer tags or alone at the end."""

    name, answer_kind, answer_pattern, reasoning = "letters", "letter", "[A-E]", ("I compare the choices.",)

    def read_answer(self, value, row):
        return str(value).strip().upper()

    def parse(self, completion, target=None):
        import re

        found = re.search(r"<answer>\s*([A-E])\s*</answer>", completion) or re.search(r"\b([A-E])\s*$", completion)
        return found.group(1) if found else None

    def parse_strict(self, completion, target=None):
        import re

        found = re.search(r"<answer>\s*([A-E])\s*</answer>", completion)
        return found.group(1) if found else None


def test_styles_and_scores_follow_the_task():
    task = LetterTask()
    style = get_style("r1v", task)
    assert "final answer (letter)" in style.messages("Which?")[-1]["content"][1]["text"]
    assert style.format_ok("<think>I compare.</think><answer>B</answer>") and not style.format_ok("<answer>7</answer>")
    scorer = Scorer(["answer", "format"], None, style, task)
    assert scorer("<think>x</think><answer>B</answer>", "B").reward == 2.0
    assert scorer("so the answer is C", "B").reward == 0.0 and scorer("no idea", "B").reward == -1.0
    assert get_style("default", task).demonstration("D", __import__("random").Random(0)) == "D"


# ------------------------------------------------------------------ evaluation summary
def test_eval_summary_names_each_rate_once():
    records = [
        {"answer_present": True, "correct": True, "strict_correct": True, "strict_parsed": 3, "format_ok": True},
        {"answer_present": True, "correct": False, "strict_correct": False, "strict_parsed": None, "format_ok": False},
        {"answer_present": False, "correct": False, "strict_correct": False, "strict_parsed": None, "format_ok": False},
        {"answer_present": True, "correct": True, "strict_correct": False, "strict_parsed": None, "format_ok": True},
    ]
    summary = EvalSummary.of(records)
    assert summary.answer_present_rate.value == 0.75 and summary.accuracy.value == 0.5
    assert summary.tag_answer_rate.value == 0.25 and summary.style_format_rate.value == 0.5
    assert summary.accuracy_given_answer.value == pytest.approx(2 / 3) and summary.strict_accuracy.value == 0.25
    out = summary.to_dict("greedy_", ("answer_present_rate",))
    assert out["greedy_answer_present_rate"] == 0.75 and len(out["greedy_answer_present_rate_ci"]) == 2
    assert EvalSummary.of([]).accuracy.value is None


# ------------------------------------------------------------------ family adapters
def test_unknown_model_types_get_the_generic_adapter_which_refuses_prefix_passes():
    assert adapter_for_type("qwen2_vl") is family_named("qwen2-vl")
    assert adapter_for_type("some_new_vlm") is GENERIC and not GENERIC.supports_prefix

    class Config:
        model_type = "some_new_vlm"

    class Model:
        config = Config()

    with pytest.raises(NotImplementedError, match="logprob_sharing=none"):
        GENERIC.prefill(Model(), {})


def test_models_prints_the_support_matrix():
    from typer.testing import CliRunner

    from vlm_grpo.cli import app
    from vlm_grpo.models import registered_models
    from vlm_grpo.models.families import FAMILIES

    lines = CliRunner().invoke(app, ["models"]).output.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line and line.split()[0] in dict(FAMILIES.items())}
    assert set(rows) == {name for name, _ in FAMILIES.items()}
    for family, adapter in FAMILIES.items():
        # Every family has a tiny real-architecture model (its end-to-end tests train it).
        assert f"tiny-{family}" in registered_models() and rows[family][-1] == f"tiny-{family}"
        assert ("prefix," in rows[family]) == adapter.supports_prefix
    assert any(line.startswith("generic") and line.rstrip().endswith("-") for line in lines)
