"""A Source over rows the caller already holds: a `datasets.Dataset`, a list of dicts, or a list of
`Sample`s, as the Python API's `train_dataset` and `eval_dataset` take them.

Rows are read with the same column layouts and `data.columns` mapping as files (`files.py`), so a set
that trains from a parquet file trains the same way from memory. It is registered nowhere: the
caller passes it to the trainer. The row's other columns stay readable by sample id
(`columns_of`), for reward functions that take them as keyword arguments, as TRL passes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tasks import Task
from .files import column_names, make_sample
from .samples import Sample


class InMemorySource:
    """Random access to held rows; images are decoded only when a sample is used."""

    always_split = False

    def __init__(self, rows: Any, task: Task, columns: dict[str, str] | None = None, name: str = "train_dataset"):
        if not len(rows):
            raise ValueError(f"{name} holds no rows")
        self.name, self._task = name, task
        self._rows = _lazy_images(rows, dict(columns or {}))
        self._samples = all(isinstance(r, Sample) for r in _head(self._rows))
        if not self._samples:  # a missing column fails here, once, not as every row skipped
            self._names = column_names(_column_set(self._rows), dict(columns or {}), name)
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:
        row = self._rows[index]
        sample = row if self._samples else make_sample(f"{self.name}#{index}", row, self._names, self.name, self._task)
        self._index[sample.id] = index
        return sample

    def columns_of(self, sample_id: str) -> dict[str, Any]:
        """The other columns of the row a sample came from (not its image: rewards score text)."""
        index = self._index.get(sample_id)
        if index is None or self._samples:
            return {}
        row = self._rows[index]
        return {k: v for k, v in row.items() if k not in (self._names["image"], self._names["question"])}


def _head(rows: Any) -> list:
    return [rows[i] for i in range(min(len(rows), 50))]


def _column_set(rows: Any) -> set[str]:
    names = getattr(rows, "column_names", None)
    if names is not None:
        return set(names)
    head = _head(rows)
    if not all(isinstance(r, dict) for r in head):
        kinds = sorted({type(r).__name__ for r in head})
        raise ValueError(f"rows must be dicts (or Samples, or a datasets.Dataset); got {', '.join(kinds)}")
    return set().union(*(r.keys() for r in head))


def _lazy_images(rows: Any, columns: dict[str, str]) -> Sequence:
    """A datasets.Dataset's image column left encoded, as files.arrow_source leaves it: decoding
    happens per sample, in the prompt stream, not for every row read."""
    features = getattr(rows, "features", None)
    if features is None:
        return rows
    import datasets

    image = columns.get("image", "image")
    if isinstance(features.get(image), datasets.Image):
        return rows.cast_column(image, datasets.Image(decode=False))
    return rows
