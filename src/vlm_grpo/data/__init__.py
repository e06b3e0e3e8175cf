"""Data: samples, sources, the held-out split and the training prompt stream.

`open_source(spec)` resolves a registered data set name (the counting lab registers
`lab-clevr` and `lab-superclevr`), a .jsonl/.parquet file, a folder of parquet files, or a hub
id. A new named data set is one factory registered with `register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import BadSample
from ..registry import Registry
from ..tasks import Task, get_task
from .files import arrow_source, jsonl_source
from .in_memory import InMemorySource
from .samples import Sample, Source
from .stream import PromptStream, eval_samples, split_indices

# name -> factory(images root or None, task) -> Source
DATASETS: Registry[Callable[[str | None, Task], Source]] = Registry("data set")


def register_dataset(name: str, factory: Callable[[str | None, Task], Source]) -> None:
    DATASETS.register(name, factory)


def open_source(
    spec: str, images: str | None = None, task: Task | None = None, columns: dict[str, str] | None = None
) -> Source:
    """A registered name, a .jsonl/.parquet file, a folder of parquet files, or a hub id; `columns`
    names the file's column for each field (`data.columns`)."""
    task, columns = task or get_task(), dict(columns or {})
    if spec in DATASETS:
        return DATASETS.get(spec)(images, task)
    path = Path(spec)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        return jsonl_source(path, images, task, columns)
    if path.suffix == ".parquet" or path.is_dir() or "/" in spec:
        if path.suffix == ".parquet" and not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        return arrow_source(spec, images, task, columns)
    names = ", ".join(DATASETS.names())
    raise ValueError(f"unknown data set {spec!r}: use {names}, a .jsonl/.parquet path, or a hub id")


__all__ = [
    "BadSample",
    "DATASETS",
    "InMemorySource",
    "PromptStream",
    "Sample",
    "Source",
    "eval_samples",
    "open_source",
    "register_dataset",
    "split_indices",
]
