"""The Python API, shaped like TRL's, over the same trainer the `vlm-grpo train` command runs.

    from vlm_grpo import GRPOConfig, GRPOTrainer

    trainer = GRPOTrainer(
        model="Qwen/Qwen2-VL-2B-Instruct",          # a registered name, a folder, a hub id, or a loaded model
        reward_funcs=["answer", my_reward],         # our reward names and TRL-shaped callables
        args=GRPOConfig(output_dir="runs/api", max_steps=100, injection={"mode": "random"}),
        train_dataset=dataset,                      # datasets.Dataset or a list of dicts (image, question, answer)
    )
    trainer.train()

What differs from TRL, and why:
- `GRPOConfig` is this package's `TrainConfig`: its keys, defaults and checks (a misspelt key or a
  bad value fails at construction with the same message a YAML file gets).
- A data set is rows of an image, a question and an answer (or columns named by `data.columns`),
  read by the configured `task`, not a chat `prompt` column: the prompt style writes the prompt.
  All of `train_dataset` trains (`data.eval_holdout` is set to 0); `eval_dataset` is scored greedily
  with the task's accuracy, as `data.eval` sets are.
- A reward callable gets `completions`, `answer` (the ground truths as the task reads them),
  `prompts` (the questions) and the data set's other columns; see `vlm_grpo.tasks.rewards`.
- A callback is an object with `on_step_end(step, metrics)`, a plain `callable(step, metrics)`, or a
  `transformers.TrainerCallback` (anything with `on_log`), which gets `on_step_end` and `on_log`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import TrainConfig, from_dict, to_dict
from .config_checks import validate
from .data import InMemorySource, eval_samples
from .models import adapter_for_type
from .tasks import Task, get_task
from .tasks.rewards import BatchReward
from .training.heldout import HeldOutSets
from .training.inputs import RunInputs
from .training.trainer import Trainer as _Trainer
from .training.trl_args import from_trl

TRAIN_NAME = "train_dataset"
"""`data.train` of a run whose rows were passed in (no file or registered set holds them)."""


@dataclass(init=False)
class GRPOConfig(TrainConfig):
    """`TrainConfig` built by keywords, as TRL's GRPOConfig is: nested sections as dicts or as their
    dataclasses (`injection={"mode": "random"}` or `injection=InjectionConfig(mode="random")`),
    converted and checked on construction exactly as `load_config` converts and checks a YAML file.
    TRL's own fields are taken with TRL's meaning or refused with a line saying what to use instead
    (`training.trl_args`, the table in docs/python-api.md)."""

    def __init__(self, **settings: Any) -> None:
        settings = {**settings.pop("sections", {}), **settings}  # `dataclasses.replace` passes them whole
        raw = {k: to_dict(v) if dataclasses.is_dataclass(v) else v for k, v in from_trl(settings).items()}
        built = from_dict(TrainConfig, raw)  # dict sections become dataclasses; types checked
        for f in dataclasses.fields(TrainConfig):
            setattr(self, f.name, getattr(built, f.name))
        validate(self)


class GRPOTrainer:
    """TRL's `GRPOTrainer(model, reward_funcs, args, train_dataset, eval_dataset, processing_class,
    callbacks).train()`; everything else is configured in `args`."""

    def __init__(
        self,
        model: str | os.PathLike | Any,
        reward_funcs: str | Callable | list[str | Callable] | None = None,
        args: TrainConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        callbacks: list[Any] | None = None,
    ):
        given = None if isinstance(model, (str, os.PathLike)) else model
        funcs = _as_list(reward_funcs) if reward_funcs is not None else None
        evals = _named_evals(eval_dataset)
        cfg = _run_config(args if args is not None else GRPOConfig(), model, funcs, train_dataset is not None, evals)
        task = get_task(cfg.task, cfg.task_options)
        train = InMemorySource(train_dataset, task, cfg.data.columns) if train_dataset is not None else None
        if given is not None:
            processing_class = processing_class or _processor_of(given, cfg)
        inputs = RunInputs(
            model=given,
            processor=processing_class,
            train=train,
            eval_sets=_heldout(cfg, task, evals),
            rewards=None if funcs is None else [_reward(f, train) for f in funcs],
            callbacks=[_step_hook(c, cfg) for c in callbacks or []],
            reproduce=_reproduce(model, funcs, train_dataset is not None, list(evals)),
        )
        self.args = cfg
        self.trainer = _Trainer(cfg, inputs)
        self.model, self.processing_class = self.trainer.model, self.trainer.processor

    def train(self) -> dict:
        """Train to `args.max_steps`; returns the run's summary (steps, wall time, final metrics)."""
        return self.trainer.train()


def _run_config(
    args: TrainConfig, model: Any, funcs: list | None, own_train: bool, evals: dict[str, Any]
) -> TrainConfig:
    """`args` with what the call passed in written into it, so config.yaml and the model card record
    it; checked again, since a new reward list must still match reward_weights."""
    changes: dict[str, Any] = {"model": _model_name(model)}
    if funcs is not None:
        changes["reward_funcs"] = [f if isinstance(f, str) else BatchReward(f).name for f in funcs]
    data = args.data
    if own_train:  # all passed rows train; held-out rows come from eval_dataset
        data = dataclasses.replace(data, train=TRAIN_NAME, eval_holdout=0)
    if evals:
        data = dataclasses.replace(data, eval=[*evals, *(n for n in data.eval if n not in evals)])
    if getattr(args.lora, "load_in_4bit", False) and not isinstance(model, (str, os.PathLike)):
        raise ValueError("lora.load_in_4bit quantizes while loading: pass the model's name or folder, not a model")
    return validate(dataclasses.replace(args, data=data, **changes))


def _model_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return getattr(model, "name_or_path", "") or type(model).__name__


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _named_evals(eval_dataset: Any) -> dict[str, Any]:
    """TRL takes one eval set or a dict of named ones."""
    if eval_dataset is None:
        return {}
    if isinstance(eval_dataset, Mapping):
        return dict(eval_dataset)
    return {"eval_dataset": eval_dataset}


def _heldout(cfg: TrainConfig, task: Task, evals: dict[str, Any]) -> HeldOutSets | None:
    """The passed sets' first `data.eval_size` usable rows, beside the named sets of `data.eval`."""
    if not evals:
        return None
    named = HeldOutSets(dataclasses.replace(cfg.data, eval=[n for n in cfg.data.eval if n not in evals]), task)
    given = {}
    for name, rows in evals.items():
        source = InMemorySource(rows, task, cfg.data.columns, name)
        given[name] = eval_samples(source, range(len(source)), cfg.data.eval_size)
        if not given[name]:
            raise ValueError(f"eval_dataset {name!r} has no usable row")
    named.sets = {**given, **named.sets}
    return named


def _processor_of(model: Any, cfg: TrainConfig) -> Any:
    """As TRL does: the processor saved with the model, when the model says where it came from."""
    path = getattr(model, "name_or_path", "")
    if not path:
        raise ValueError("the model has no name_or_path to load its processor from: pass processing_class")
    return adapter_for_type(model.config.model_type).load_processor(
        path, model.config.model_type, cfg.trust_remote_code
    )


def _reward(func: str | Callable, train: InMemorySource | None) -> str | BatchReward:
    if isinstance(func, str):
        return func
    if not callable(func):
        raise TypeError(f"reward_funcs entries are reward names or callables, not {type(func).__name__}")
    return BatchReward(func, train.columns_of if train is not None else None)


def _step_hook(callback: Any, cfg: TrainConfig) -> Callable[[int, dict], None]:
    """One `(step, metrics)` hook per callback, whatever its shape."""
    if hasattr(callback, "on_log"):  # a transformers.TrainerCallback
        from transformers.trainer_callback import TrainerControl, TrainerState

        state, control = TrainerState(max_steps=cfg.max_steps), TrainerControl()

        def trainer_callback(step: int, metrics: dict) -> None:
            state.global_step = step
            state.log_history.append({**metrics, "step": step})
            callback.on_step_end(cfg, state, control)
            callback.on_log(cfg, state, control, logs=dict(metrics))

        return trainer_callback
    if hasattr(callback, "on_step_end"):
        return callback.on_step_end
    if callable(callback):
        return callback
    raise TypeError(f"a callback needs on_step_end(step, metrics) or on_log; got {type(callback).__name__}")


def _reproduce(model: Any, funcs: list | None, own_train: bool, evals: list[str]) -> str:
    """The model card's recipe for a run started from Python: the same call, reading config.yaml."""
    named = isinstance(model, (str, os.PathLike))
    shown = f"{json.dumps(os.fspath(model))}," if named else f"model,  # the same model: {_model_name(model)}"
    lines = ["import yaml", "from vlm_grpo import GRPOConfig, GRPOTrainer", ""]
    lines += [
        'args = GRPOConfig(**yaml.safe_load(open("config.yaml")))',
        "trainer = GRPOTrainer(",
        f"    model={shown}",
    ]
    if funcs is not None:
        names = [json.dumps(f) if isinstance(f, str) else getattr(f, "__name__", type(f).__name__) for f in funcs]
        sources = [BatchReward(f).name for f in funcs if not isinstance(f, str)]
        note = f"  # the same functions: {', '.join(sources)}" if sources else ""
        lines.append(f"    reward_funcs=[{', '.join(names)}],{note}")
    lines.append("    args=args,")
    if own_train:
        lines.append("    train_dataset=...,  # the same rows")
    if evals:
        lines.append(f"    eval_dataset=...,  # the same rows: {', '.join(evals)}")
    lines += [")", "trainer.train()"]
    return "Trained from Python; from this folder:\n\n```python\n" + "\n".join(lines) + "\n```"
