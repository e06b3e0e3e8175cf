"""The TRL-shaped Python API: `GRPOTrainer(model, reward_funcs, args=GRPOConfig(...), train_dataset=...)`
trains a tiny real Qwen2-VL from a datasets.Dataset or a list of dicts, with callable and named
rewards, a loaded model used as is, and callbacks that see every step."""

import re

import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import TrainerCallback

from support import ROOT
from vlm_grpo import GRPOConfig, GRPOTrainer
from vlm_grpo.config import ConfigError
from vlm_grpo.guidance import InjectionConfig

EXAMPLES = [ROOT / "README.md", ROOT / "docs" / "python-api.md"]
TINY = dict(num_generations=2, prompts_per_step=2, num_iterations=1, max_completion_length=6, progress=False)


def rows(n: int = 6) -> dict[str, list]:
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    return {
        "image": [Image.new("RGB", (28, 28), colours[i % 3]) for i in range(n)],
        "question": [f"How many shapes are there? ({i})" for i in range(n)],
        "answer": [str(i % 3) for i in range(n)],
        "origin": [f"row-{i}" for i in range(n)],
    }


@pytest.mark.parametrize("doc", EXAMPLES, ids=lambda path: path.name)
def test_the_documented_example_runs_verbatim(tmp_path, monkeypatch, doc):
    block = re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(doc), "exec"), {})
    assert (tmp_path / "runs" / "python-api" / "checkpoint-1" / "model.safetensors").is_file()


class StepRecorder:
    def __init__(self):
        self.steps = []

    def on_step_end(self, step, metrics):
        self.steps.append((step, dict(metrics)))


class LogRecorder(TrainerCallback):
    def __init__(self):
        self.logs, self.ends = [], []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, logs))


def test_trains_from_a_dataset_with_callable_and_named_rewards_and_callbacks(tmp_path):
    calls = []

    def brief(completions, answer, prompts=None, **kwargs):
        calls.append({"completions": completions, "answer": answer, "prompts": prompts, **kwargs})
        return [1.0 if len(c) < 40 else 0.0 for c in completions]

    steps, logs = StepRecorder(), LogRecorder()
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, data={"eval_size": 2, "eval_steps": 2}, **TINY)
    trainer = GRPOTrainer(
        model="tiny-qwen2-vl",
        reward_funcs=[brief, "answer"],
        args=args,
        train_dataset=Dataset.from_dict(rows()),
        eval_dataset=Dataset.from_dict(rows(3)),
        callbacks=[steps, logs],
    )
    summary = trainer.train()

    assert summary["steps"] == 2
    # Batched per step: one call with every sampled completion, the task's targets and the other columns.
    sampled = [c for c in calls if c["prompts"] is not None]
    assert len(sampled) == 2 and all(len(c["completions"]) == 4 for c in sampled)
    assert all(isinstance(a, int) for c in sampled for a in c["answer"])
    assert all(o.startswith("row-") for c in sampled for o in c["origin"])
    assert all(q.startswith("How many shapes") for c in sampled for q in c["prompts"])
    assert [s for s, _ in steps.steps] == [1, 2] and logs.ends == [1, 2] and [s for s, _ in logs.logs] == [1, 2]
    assert all("reward/mean" in m and "loss/policy" in m for _, m in steps.steps)
    assert "eval/eval_dataset/accuracy" in steps.steps[-1][1]
    # config.yaml records a callable by module:qualname
    assert trainer.args.reward_funcs[0].endswith(f":{brief.__qualname__}") and trainer.args.reward_funcs[1] == "answer"
    assert trainer.args.data.train == "train_dataset" and trainer.args.data.eval_holdout == 0


def test_a_loaded_model_from_a_list_of_dicts_is_trained_in_place(tmp_path):
    from vlm_grpo.models.tiny import build_tiny

    model, processor = build_tiny("qwen2-vl")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    table = rows(4)
    data = [{"img": table["image"][i], "q": table["question"][i], "count": table["answer"][i]} for i in range(4)]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        learning_rate=1e-2,
        injection=InjectionConfig(mode="random"),
        data={"columns": {"image": "img", "question": "q", "answer": "count"}},
        **TINY,
    )
    trainer = GRPOTrainer(
        model=model,
        processing_class=processor,
        reward_funcs=["answer", lambda completions, answer, **kw: [0.5] * len(completions)],
        args=args,
        train_dataset=data,
    )
    assert trainer.model is model and trainer.processing_class is processor
    trainer.train()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert changed, "the caller's model object was not the one trained"
    assert (tmp_path / "checkpoint-1" / "model.safetensors").is_file()


def test_a_dataset_without_the_needed_columns_fails_once_and_clearly(tmp_path):
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, **TINY)
    table = {k: v for k, v in rows(2).items() if k != "answer"}
    with pytest.raises(
        ValueError, match=r"train_dataset: no answer column among \[.*\]; name it with data.columns.answer=COLUMN"
    ):
        GRPOTrainer(model="tiny-qwen2-vl", reward_funcs=["answer"], args=args, train_dataset=Dataset.from_dict(table))
    mapped = GRPOConfig(output_dir=str(tmp_path), data={"columns": {"answer": "total"}}, **TINY)
    with pytest.raises(ValueError, match="data.columns names columns it does not have .answer=total"):
        GRPOTrainer(model="tiny-qwen2-vl", args=mapped, train_dataset=[{"image": "x.png", "question": "q", "n": 1}])


def test_config_errors_are_reported_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="num_generations=1"):
        GRPOConfig(num_generations=1)
    with pytest.raises(ConfigError, match=r"did you mean 'injection.mode'"):
        GRPOConfig(injection={"mdoe": "random"})
    with pytest.raises(ConfigError, match="injection.mode='sometimes' is not one of"):
        GRPOConfig(injection=InjectionConfig(mode="sometimes"))
    cfg = GRPOConfig(injection={"mode": "random"}, learning_rate="5e-5")
    assert isinstance(cfg.injection, InjectionConfig) and cfg.injection.mode == "random" and cfg.learning_rate == 5e-5
    # A reward list passed to the trainer must still match reward_weights.
    args = GRPOConfig(output_dir=str(tmp_path), reward_weights=[1.0], **TINY)
    with pytest.raises(ConfigError, match="reward_weights has 1 entries for 2 reward_funcs"):
        GRPOTrainer(model="tiny-qwen2-vl", reward_funcs=["answer", "format"], args=args, train_dataset=rows(2))
