"""Data: samples, sources, the held-out split and the training prompt stream.

`open_source(spec)` resolves a registered data set name (the counting lab registers `lab-clevr` and
`lab-superclevr`), data files (.jsonl, .json, .csv, .parquet; one, a glob or a list), a folder (data
files, an image folder with metadata, `save_to_disk` output) or a hub id (`files.py`). A new named data set
is one factory registered with `register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import BadSample
from ..registry import Registry
from ..tasks import Task, get_task
from .files import file_source, is_file_spec
from .in_memory import InMemorySource
from .samples import Sample, Source
from .stream import PromptStream, eval_samples, split_indices

# name -> factory(images root or None, task) -> Source
DATASETS: Registry[Callable[[str | None, Task], Source]] = Registry("data set")


def register_dataset(name: str, factory: Callable[[str | None, Task], Source]) -> None:
    DATASETS.register(name, factory)


def open_source(
    spec: str | Sequence[str],
    images: str | None = None,
    task: Task | None = None,
    columns: dict[str, str] | None = None,
    split: str | None = None,
) -> Source:
    """A registered name, data files (one, a glob or a list), a folder, or a hub id; `columns` names the
    rows' column for each field (`data.columns`), `split` the split of a folder or hub set (`data.split`)."""
    task, columns = task or get_task(), dict(columns or {})
    if isinstance(spec, str) and spec in DATASETS:
        return DATASETS.get(spec)(images, task)
    if not is_file_spec(spec):
        names = ", ".join(DATASETS.names())
        raise ValueError(
            f"unknown data set {spec!r}: use {names}, a .jsonl/.json/.csv/.parquet path or glob, a folder, or a hub id"
        )
    return file_source(spec, images, task, columns, split)


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
