"""What several test modules share: the tiny-run overrides, lab samples and a two-step training run."""

import json
from pathlib import Path

import torch

from vlm_grpo.data import Sample
from vlm_grpo.lab.scenes import render_scene

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"

# A seconds-long run of the tiny random Qwen2-VL (add output_dir, max_steps, ...).
TINY = [
    "model=tiny-qwen2-vl",
    "num_generations=4",
    "prompts_per_step=2",
    "max_completion_length=12",
    "learning_rate=1e-3",
    "progress=false",
]


def lab_samples(n=2, size=112):
    """`n` counting scenes, each question longer than the last (prompts of different lengths)."""
    out = []
    for i in range(n):
        image, scene = render_scene("lab-clevr", i, size=size)
        out.append(Sample(f"s{i}", image, scene.question + " Count carefully." * i, scene.count, "lab-clevr"))
    return out


def train_two_steps(tmp_path, model_name: str, extra=()):
    """Two steps of the smoke config on `model_name`: both logged, every trainable parameter set
    touched, the final checkpoint written. Returns the trainer."""
    from vlm_grpo.config import load_config
    from vlm_grpo.training.trainer import Trainer

    overrides = [f"model={model_name}", f"output_dir={tmp_path / 'run'}", "max_steps=2", "save_steps=2"]
    trainer = Trainer(load_config(SMOKE, overrides + ["progress=false", "report_to=[]", *extra]))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert changed and (tmp_path / "run" / "checkpoint-2").is_dir()
    return trainer
