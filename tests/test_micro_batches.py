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


@pytest.mark.parametrize("loss_type", ["token_mean", "seq_mean"])
def test_the_loss_does_not_depend_on_the_grouping(tmp_path, loss_type):
    weights, shares = [], []
    for name, grouping in (("rows", "micro_batch_size=8"), ("tokens", "micro_batch_tokens=20")):
        cfg = load_config(
            None,
            TINY
            + [
                f"output_dir={tmp_path / name}",
                "max_steps=2",
                "save_steps=2",
                "num_iterations=2",
                f"loss_type={loss_type}",
                grouping,
                "report_to=[]",
            ],
        )
        trainer = Trainer(cfg)
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        shares.append([line["update/padding_share"] for line in lines])
    assert all(torch.allclose(weights[0][n], weights[1][n], atol=1e-5) for n in weights[0])  # float rounding only
    assert all(0 <= share < 1 for run in shares for share in run)
    assert shares[0] != shares[1]  # the two runs did group their rows differently
