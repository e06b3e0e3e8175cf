"""Dynamic sampling: groups without signal are replaced by groups from further draws."""

import json

import torch

from support import lab_config
from vlm_grpo.data import Sample
from vlm_grpo.guidance.dynamic_sampling import collect, has_signal
from vlm_grpo.rollout import PromptBatch, Rollout
from vlm_grpo.tasks.rewards import Scorer
from vlm_grpo.tasks.styles import DEFAULT
from vlm_grpo.training.trainer import Trainer

SCORER = Scorer(["answer"], None, DEFAULT)
G = 2


def rollout_of(name: str, texts_per_group: list[list[str]]) -> Rollout:
    samples = [Sample(f"{name}/{i}", None, "How many?", 3, "test") for i in range(len(texts_per_group))]
    texts = [t for group in texts_per_group for t in group]
    width = [1, 3][len(name) % 2]  # draws of different completion widths
    ids = torch.arange(len(texts) * width).view(len(texts), width)
    return Rollout(
        PromptBatch(samples, {}),
        G,
        ids,
        torch.ones(len(texts), width),
        torch.zeros(len(texts), dtype=torch.bool),
        texts,
        [SCORER(t, 3) for t in texts],
    )


def encode(samples):
    return PromptBatch(samples, {})


def test_groups_with_signal_are_kept_in_draw_order():
    first = rollout_of("a", [["3", "4"], ["x", "y"], ["5", "6"]])  # signal, none, none
    later = [
        rollout_of("bb", [["x", "x"], ["3", "x"], ["3", "3"]]),
        rollout_of("c", [["4", "3"], ["1", "2"], ["2", "x"]]),
    ]
    assert has_signal(first) == [True, False, False]
    out, metrics = collect(first, lambda: later.pop(0), 4, lambda short: short, encode, pad_id=-1)
    assert [s.id for s in out.prompts.samples] == ["a/0", "bb/1", "c/0"]
    assert has_signal(out) == [True, True, True]
    assert out.texts == ["3", "4", "3", "x", "4", "3"]
    assert out.completion_ids.shape == (6, 3)
    assert out.completion_ids[0].tolist() == [0, 1, 2]  # the first draw is 3 wide
    assert out.completion_ids[2].tolist() == [2, -1, -1]  # the second 1 wide: right-padded
    assert out.completion_mask[2].tolist() == [1, 0, 0]
    assert metrics == {
        "sampling/batches_drawn": 3,
        "sampling/groups_discarded": 6,
        "sampling/groups_without_signal": 5,
        "sampling/short_steps": 0.0,
    }


def test_a_short_step_is_filled_and_counted():
    first = rollout_of("a", [["x", "y"], ["3", "4"]])
    out, metrics = collect(first, lambda: rollout_of("bb", [["x", "x"], ["3", "3"]]), 2, lambda s: s, encode, 0)
    assert [s.id for s in out.prompts.samples] == ["a/1", "a/0"] and metrics["sampling/short_steps"] == 1.0


def test_a_first_draw_with_signal_everywhere_is_used_as_it_is():
    first = rollout_of("a", [["3", "4"], ["5", "x"]])
    out, metrics = collect(first, lambda: 1 / 0, 4, lambda s: s, encode, 0)
    assert out is first and metrics["sampling/batches_drawn"] == 1


def test_dynamic_sampling_trains_without_zero_signal_groups(tmp_path):
    cfg = lab_config(
        f"output_dir={tmp_path}",
        "max_steps=3",
        "save_steps=3",
        "num_iterations=1",
        "dynamic_sampling.enabled=true",
        "dynamic_sampling.max_batches=6",
        "max_completion_length=24",
    )
    Trainer(cfg).train()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert line["sampling/batches_drawn"] >= 1
        if not line["sampling/short_steps"]:
            assert line["groups/frac_zero_std"] == 0.0
    assert any(line["sampling/batches_drawn"] > 1 for line in lines)
    assert any(not line["sampling/short_steps"] for line in lines)
