"""The step batch cut into minibatches and micro-batches: whole groups per minibatch, micro-batches cut
to their longest completion; micro-batches by a token budget: the grouping on literal lengths, the
padding share, and a training run whose loss (and so its weights) does not depend on how rows are
grouped."""

import json

import pytest
import torch

from support import TINY
from vlm_grpo.config import load_config
from vlm_grpo.rollout import PromptBatch, Rollout, StepBatch
from vlm_grpo.rollout.batch import micro_batches_by_tokens, padding_share
from vlm_grpo.tasks import Score
from vlm_grpo.training.trainer import Trainer


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


# ------------------------------------------------------------------ micro-batches by a token budget
LENGTHS = torch.tensor([5, 1, 3, 3, 8])


def test_rows_grouped_longest_first_within_the_budget():
    groups = [g.tolist() for g in micro_batches_by_tokens(LENGTHS, 10)]
    # 8 alone (8 + 5 would pad to 16); 5 and 3 pad to 2 x 5 = 10; then 3 and 1 (2 x 3 = 6).
    assert groups == [[4], [0, 2], [3, 1]]


def test_prompt_tokens_count_against_the_budget():
    # Each row's pass also runs 2 prompt tokens: 5 + 3 now costs 2 x (2 + 5) = 14 > 10.
    groups = [g.tolist() for g in micro_batches_by_tokens(LENGTHS, 10, per_row=2)]
    assert groups == [[4], [0], [2, 3], [1]]


def test_a_row_over_the_budget_runs_alone():
    assert [g.tolist() for g in micro_batches_by_tokens(torch.tensor([30, 2, 2]), 10)] == [[0], [1, 2]]


def test_padding_share_counts_positions_past_each_rows_end():
    micros = [torch.tensor([4]), torch.tensor([0, 2]), torch.tensor([3, 1])]
    # computed: 8 + 2 x 5 + 2 x 3 = 24 positions for 20 tokens
    assert padding_share(micros, LENGTHS) == pytest.approx(4 / 24)
    assert padding_share([torch.arange(5)], LENGTHS) == pytest.approx(1 - 20 / 40)


@pytest.mark.parametrize("loss_type", ["bnpo", "grpo", "dapo"])
def test_the_loss_does_not_depend_on_the_grouping(tmp_path, loss_type):
    """One update over the same rollout, its rows in 8-row passes or under a 40-token budget: the same
    loss and gradient norm up to float rounding (compared before Adam, which would magnify rounding
    in near-zero gradients into whole learning-rate steps)."""
    lines = {}
    for name, grouping in (("rows", "micro_batch_size=8"), ("tokens", "micro_batch_tokens=40")):
        overrides = [f"output_dir={tmp_path / name}", "max_steps=1", "num_iterations=1", f"loss_type={loss_type}"]
        # A lab base ends its answers at different lengths, so the two groupings pad differently.
        overrides += ["model=lab-base", "max_completion_length=32", grouping, "report_to=[]"]
        Trainer(load_config(None, TINY + overrides)).train()
        lines[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
    rows, tokens = lines["rows"], lines["tokens"]
    assert tokens["loss/policy"] == pytest.approx(rows["loss/policy"], rel=1e-5, abs=1e-7)
    assert tokens["optim/grad_norm"] == pytest.approx(rows["optim/grad_norm"], rel=1e-5)
    assert 0 <= tokens["update/padding_share"] < rows["update/padding_share"] < 1  # sorting by length pads less
