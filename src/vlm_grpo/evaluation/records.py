"""One evaluation path for baseline assessment, evaluation during training and final evaluation.

Generation (greedy, or G samples at a temperature) goes through a rollout engine, as the trainer
samples (the policy itself by default, `sample_records(engine, ...)` for another engine), every
completion is scored by the same `Scorer` with the same task, and every table is built from one
summary type, `EvalSummary`, so every number in every table comes from one scorer and carries one
name:
- `answer_present_rate`: the task's parser reads an answer (the study's digit-extraction or
  "format" rate, "number present" for counting; `rollout/answer_present_rate` in training metrics);
- `style_format_rate`: the completion is in the prompt style's own format (a bare answer;
  think/answer tags; `rollout/format_rate` in training metrics);
- `tag_answer_rate`: an answer inside <answer> tags parses (R1-V's strict reading);
- `accuracy`, `strict_accuracy` (tags only) and `accuracy_given_answer`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from ..core.statistics import wilson_interval
from ..data import BadSample, Sample, eval_samples, open_source, split_indices
from ..models import adapter_for
from ..rollout import Engine, HFEngine, SamplingParams, encode_prompts, make_engine
from ..rollout.engines import EngineOptions
from ..rollout.turns import ToolEngine
from ..tasks import Task, get_task
from ..tasks.rewards import Scorer
from ..tasks.styles import PromptStyle
from ..tools import get_tools


@dataclass(frozen=True)
class EvalOptions:
    """Where held-out samples come from and how they are decoded: what `assess` and `eval` share."""

    holdout: int = 1000
    """Rows of a lab set held out from training (the held-out samples come from them)."""
    images: str | None = None
    """Root folder for relative image paths."""
    task: Task | str = "counting"
    """The task (a name, or a Task with its options) that scores and parses."""
    columns: dict[str, str] | None = None
    """FIELD=COLUMN mapping of the data set's columns, e.g. {"question": "problem"}."""
    batch_size: int | None = None
    """Completions per generation batch (None: the command's own default, 64 for assess, 32 for eval)."""
    max_new_tokens: int = 50
    device: str = "auto"
    dtype: str = "auto"
    """Weights' dtype for inference (auto: the checkpoint's)."""
    engine: str = "hf"
    """The rollout engine that samples (`hf`: the model itself; `vllm`: a server of its own)."""
    seed: int = 0
    progress: bool = True
    tools: tuple[str, ...] = ()
    """Tools the policy may call (a run trained with them is evaluated with them); empty: one turn."""
    max_turns: int = 1
    """Most assistant turns per answer, with tools."""

    def resolved_task(self) -> Task:
        return get_task(self.task) if isinstance(self.task, str) else self.task


def generate_records(
    model, processor, style: PromptStyle, samples: Sequence[Sample], dataset: str, **options
) -> list[dict]:
    """`sample_records` with the model itself sampling, in this process (the `hf` engine)."""
    return sample_records(HFEngine(model, processor), style, samples, dataset, **options)


@contextlib.contextmanager
def opened_engine(
    name: str, policy, processor, settings: Any = None, tools: Sequence[str] = (), max_turns: int = 1
) -> Iterator[Engine]:
    """The named rollout engine around a loaded policy for one evaluation, closed after it (a vllm
    server the engine started is stopped); the engine's weights take the policy's dtype; `settings`, its
    config section (None: its defaults). With
    `tools`, answers may call them for up to `max_turns` turns."""
    dtype = str(next(policy.parameters()).dtype).removeprefix("torch.")
    engine = make_engine(name, policy, processor, EngineOptions(settings=settings, dtype=dtype))
    if tools:
        turn_end = adapter_for(policy).turn_end_id(processor)
        engine = ToolEngine(engine, get_tools(tools), max_turns, turn_end)
    try:
        yield engine
    finally:
        engine.close()


def sample_records(
    engine: Engine,
    style: PromptStyle,
    samples: Sequence[Sample],
    dataset: str,
    batch_size: int = 16,
    group_size: int = 1,
    temperature: float | None = None,
    max_new_tokens: int = 50,
    progress: bool = False,
    task: Task | None = None,
) -> list[dict]:
    """One record per completion: what was asked, what came back, and how it scored."""
    task = task or get_task()
    scorer = Scorer(["answer"], None, style, task)
    params = SamplingParams(group_size, max_new_tokens, temperature)
    records: list[dict] = []
    prompts_per_batch = max(1, batch_size // group_size)
    batches = range(0, len(samples), prompts_per_batch)
    for start in tqdm(batches, desc=f"eval {dataset}", disable=not progress, leave=False):
        chunk = [s for s in map(_decoded, samples[start : start + prompts_per_batch]) if s is not None]
        if not chunk:
            continue
        prompts = encode_prompts(engine.processor, style, chunk, engine.device)
        done = engine.sample(prompts, params)
        truncated, texts = done.truncated, done.texts
        for row, text in enumerate(texts):
            sample = chunk[row // group_size]
            score = scorer(text, sample.answer)
            records.append(
                {
                    "dataset": dataset,
                    "sample_id": sample.id,
                    "group_index": row % group_size,
                    "prompt_style": style.name,
                    "answer": task.describe(sample.answer),
                    "completion": text,
                    "parsed": _jsonable(score.parsed),
                    "strict_parsed": _jsonable(task.parse_strict(text, sample.answer)),
                    "reward": score.reward,
                    "answer_present": score.answer_present,
                    "correct": score.correct,
                    "strict_correct": score.strict_correct,
                    "format_ok": score.format_ok,
                    "truncated": bool(truncated[row]),
                    **(
                        {"tool_calls": done.turns[row].calls, "transcript": done.turns[row].transcript}
                        if done.turns is not None
                        else {}
                    ),
                }
            )
    return records


def heldout_samples(
    spec: str,
    n: int,
    holdout: int = 1000,
    images: str | None = None,
    train: str | None = None,
    task: Task | None = None,
    columns: dict[str, str] | None = None,
    split: str | None = None,
) -> list[Sample]:
    """The first `n` held-out samples of data set `spec`, chosen as the trainer chooses its eval sets.

    Rendered sets (and the training set itself, `spec == train`) keep the fixed held-out split, so
    no evaluation sample was trained on; any other set is entirely unseen, so all its rows qualify.
    """
    source = open_source(spec, images, task, columns, split)
    if getattr(source, "always_split", False) or (train is not None and spec == train):
        rows = split_indices(len(source), holdout)[1]
    else:
        rows = range(len(source))
    samples = eval_samples(source, rows, n)
    if not samples:
        raise ValueError(f"data set {spec!r} has no usable held-out samples (holdout={holdout})")
    return samples


def _jsonable(value):
    """A parsed answer as a record holds it: plain values as they are, task objects as their text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _decoded(sample: Sample) -> Sample | None:
    """The sample with its images decoded once (encoding reuses them), or None when it is unusable."""
    try:
        return sample.with_decoded_images()
    except BadSample:
        return None


@dataclass(frozen=True)
class Rate:
    """hits / n with its 95 % Wilson interval; value None when n is 0."""

    hits: int
    n: int

    @property
    def value(self) -> float | None:
        return self.hits / self.n if self.n else None

    @property
    def ci(self) -> list[float]:
        return list(wilson_interval(self.hits, self.n))


@dataclass(frozen=True)
class EvalSummary:
    """The rates of a set of scored completions (see the module docstring for each name)."""

    n: int
    accuracy: Rate
    strict_accuracy: Rate
    answer_present_rate: Rate
    tag_answer_rate: Rate
    style_format_rate: Rate
    accuracy_given_answer: Rate

    RATES = (
        "accuracy",
        "strict_accuracy",
        "answer_present_rate",
        "tag_answer_rate",
        "style_format_rate",
        "accuracy_given_answer",
    )

    @classmethod
    def of(cls, records: Sequence[dict]) -> EvalSummary:
        n = len(records)
        present = sum(bool(r["answer_present"]) for r in records)
        correct = sum(bool(r["correct"]) for r in records)

        def count(key: str) -> Rate:  # hand-made records (tests, older files) may lack a part: not counted
            return Rate(sum(bool(r.get(key)) for r in records), n)

        return cls(
            n=n,
            accuracy=Rate(correct, n),
            strict_accuracy=count("strict_correct"),
            answer_present_rate=Rate(present, n),
            tag_answer_rate=Rate(sum(r["strict_parsed"] is not None for r in records), n),
            style_format_rate=count("format_ok"),
            accuracy_given_answer=Rate(correct, present),
        )

    def to_dict(self, prefix: str = "", names: Sequence[str] = RATES) -> dict:
        """`{prefix}{name}` and `{prefix}{name}_ci` for each rate (None when nothing was counted)."""
        out: dict = {}
        for name in names:
            rate = getattr(self, name)
            out[prefix + name], out[f"{prefix}{name}_ci"] = rate.value, rate.ci
        return out
