"""Micro-batches by a token budget: the grouping on literal lengths, the padding share, and a
training run whose loss (and so its weights) does not depend on how rows are grouped."""

import json

import pytest
import torch

from support import TINY
from vlm_grpo.config import load_config
from vlm_grpo.rollout.batch import micro_batches_by_tokens, padding_share
from vlm_grpo.training.trainer import Trainer

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
