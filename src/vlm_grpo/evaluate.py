"""One evaluation path for baseline assessment, evaluation during training and final evaluation.

Generation (greedy, or G samples at a temperature) goes through the same `rollout.generate` the
trainer samples with, and every completion is scored by the same `Scorer`, so every number in
every table comes from one scorer.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from tqdm.auto import tqdm

from .data import BadSample, LabSource, Sample, eval_samples, open_source, split_indices
from .prompts import PromptStyle
from .rewards import Scorer
from .rollout import encode_prompts, generate
from .stats import wilson_interval


def generate_records(
    model,
    processor,
    style: PromptStyle,
    samples: Sequence[Sample],
    dataset: str,
    batch_size: int = 16,
    group_size: int = 1,
    temperature: float | None = None,
    max_new_tokens: int = 50,
    progress: bool = False,
) -> list[dict]:
    """One record per completion: what was asked, what came back, and how it scored."""
    scorer = Scorer(["counting"], None, style)
    device = next(model.parameters()).device
    records: list[dict] = []
    prompts_per_batch = max(1, batch_size // group_size)
    batches = range(0, len(samples), prompts_per_batch)
    for start in tqdm(batches, desc=f"eval {dataset}", disable=not progress, leave=False):
        chunk = [s for s in map(_decoded, samples[start:start + prompts_per_batch]) if s is not None]
        if not chunk:
            continue
        prompts = encode_prompts(processor, style, chunk, device)
        _, _, truncated, texts = generate(model, processor, prompts, group_size, max_new_tokens, temperature)
        for row, text in enumerate(texts):
            sample = chunk[row // group_size]
            score = scorer(text, sample.answer)
            records.append({
                "dataset": dataset, "sample_id": sample.id, "group_index": row % group_size,
                "prompt_style": style.name, "answer": sample.answer, "completion": text,
                "parsed": score.parsed, "reward": score.reward, "number_present": score.number_present,
                "correct": score.correct, "strict_correct": score.strict_correct, "format_ok": score.format_ok,
                "truncated": bool(truncated[row]),
            })
    return records


def heldout_samples(spec: str, n: int, holdout: int = 1000, images: str | None = None,
                    train: str | None = None) -> list[Sample]:
    """The first `n` held-out samples of data set `spec`, chosen as the trainer chooses its eval sets.

    Lab sources (and the training set itself, `spec == train`) keep the fixed held-out split, so no
    evaluation scene was trained on; any other set is entirely unseen, so all its rows qualify.
    """
    source = open_source(spec, images)
    if isinstance(source, LabSource) or (train is not None and spec == train):
        rows = split_indices(len(source), holdout)[1]
    else:
        rows = range(len(source))
    samples = eval_samples(source, rows, n)
    if not samples:
        raise ValueError(f"data set {spec!r} has no usable held-out samples (holdout={holdout})")
    return samples


def _decoded(sample: Sample) -> Sample | None:
    """The sample with its image decoded once (encoding reuses it), or None when it is unusable."""
    try:
        return Sample(sample.id, sample.load_image(), sample.question, sample.answer, sample.domain)
    except BadSample:
        return None


def rate(records: Iterable[dict], key: str) -> dict:
    """Fraction of records whose `key` is true, with its 95 % Wilson interval."""
    values = [bool(r[key]) for r in records]
    hits, n = sum(values), len(values)
    return {"value": hits / n if n else float("nan"), "ci": list(wilson_interval(hits, n)), "n": n}


def summarize(records: Sequence[dict]) -> dict:
    """Accuracy (study's parser), strict accuracy (tags only), number-present and format rates."""
    with_number = [r for r in records if r["number_present"]]
    out = {"n": len(records)}
    for name, key in (("accuracy", "correct"), ("strict_accuracy", "strict_correct"),
                      ("number_present_rate", "number_present"), ("format_rate", "format_ok")):
        stat = rate(records, key)
        out[name], out[f"{name}_ci"] = stat["value"], stat["ci"]
    given = rate(with_number, "correct")
    out["accuracy_given_number"], out["accuracy_given_number_ci"] = given["value"], given["ci"]
    return out
