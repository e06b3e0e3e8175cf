"""GRPO on the shipped lab bases: the cold start is real, GRPO learns the format, injection gives
every group a learning signal.

Margins come from runs of these exact settings (seed 0, CPU): from lab-base the sampled
number-present rate went from 0.08 (steps 1-3) to 0.45 (steps 28-30); from lab-base-cold without
injection 63 % of groups had all-equal rewards over the first 20 steps, with injection 1 %.
With one prompt per step (most steps carry no gradient at all without injection), seeds 0-4 of
30-step runs gave a sampled number-present rate over steps 16-30 of 0.15-0.29 with injection and
0.03-0.10 without, every seed in the same order."""

import json

import pytest

from support import lab_config
from vlm_grpo.models import adapter_for
from vlm_grpo.training.trainer import Trainer

pytestmark = pytest.mark.slow


def run(tmp_path, name, *extra):
    out = tmp_path / name
    Trainer(lab_config(f"output_dir={out}", *extra)).train()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def mean(lines, key, first, last):
    values = [line[key] for line in lines if first <= line["step"] <= last]
    return sum(values) / len(values)


def test_grpo_from_lab_base_raises_the_number_present_rate(tmp_path):
    lines = run(tmp_path, "mild", "model=lab-base", "max_steps=30")
    start = mean(lines, "rollout/answer_present_rate", 1, 3)
    end = mean(lines, "rollout/answer_present_rate", 28, 30)
    assert end - start >= 0.2, (start, end)


def test_cold_start_without_injection_and_its_removal_with_it(tmp_path):
    none = run(tmp_path, "none", "model=lab-base-cold", "max_steps=20")
    injected = run(tmp_path, "inject", "model=lab-base-cold", "max_steps=20", "injection.mode=random")
    assert mean(none, "groups/frac_zero_std", 1, 20) >= 0.5  # most groups: all -1, no gradient
    assert mean(injected, "groups/frac_zero_std", 1, 20) <= 0.1
    assert mean(none, "rollout/answer_present_rate", 1, 5) <= 0.05  # the severe base: <= 5 % digits
    assert all(line["injection/rate"] > 0 for line in injected)


def test_demonstrations_end_with_the_turn_end_the_model_was_trained_on(tmp_path):
    trainer = Trainer(
        lab_config(f"output_dir={tmp_path}", "model=lab-base-cold", "max_steps=1", "injection.mode=random")
    )
    im_end = trainer.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # The generation config also lists <|endoftext|>, with a lower id: not what ends a turn.
    assert min(adapter_for(trainer.model).end_token_ids(trainer.processor, trainer.model)) != im_end
    assert trainer.remedy("injection").injector.demonstration(7)[1][-1] == im_end


def test_injection_raises_the_sampled_number_present_rate_sooner(tmp_path):
    one_prompt = ["model=lab-base-cold", "max_steps=30", "prompts_per_step=1"]
    gains = []
    for seed in (0, 1, 2):
        none = run(tmp_path, f"none-{seed}", *one_prompt, f"seed={seed}")
        injected = run(tmp_path, f"inject-{seed}", *one_prompt, f"seed={seed}", "injection.mode=random")
        gains.append(
            mean(injected, "rollout/answer_present_rate", 16, 30) - mean(none, "rollout/answer_present_rate", 16, 30)
        )
    assert all(gain > 0 for gain in gains), gains
    assert sum(gains) / len(gains) >= 0.06, gains
