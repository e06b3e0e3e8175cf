"""A Source over rows the caller already holds: a `datasets.Dataset`, a list of dicts, or a list of
`Sample`s, as the Python API's `train_dataset` and `eval_dataset` take them.

Rows are read with the same column layouts and `data.columns` mapping as files (`layouts.py`), so a set
that trains from a parquet file trains the same way from memory. It is registered nowhere: the
caller passes it to the trainer. The row's other columns stay readable by sample id
(`columns_of`), for reward functions that take them as keyword arguments, as TRL passes them.
"""

from __future__ import annotations

from typing import Any

from ..tasks import Task
from .layouts import find_columns, make_sample
from .rows import lazy_media
from .samples import Sample


class InMemorySource:
    """Random access to held rows; images are decoded only when a sample is used."""

    always_split = False

    def __init__(self, rows: Any, task: Task, columns: dict[str, str] | None = None, name: str = "train_dataset"):
        if not len(rows):
            raise ValueError(f"{name} holds no rows")
        self.name, self._task = name, task
        self._rows = lazy_media(rows)
        self._samples = all(isinstance(r, Sample) for r in _head(self._rows))
        if not self._samples:  # a missing column fails here, once, not as every row skipped
            self._columns = find_columns(_dict_rows(self._rows), dict(columns or {}), name)
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:
        row = self._rows[index]
        sample = (
            row if self._samples else make_sample(f"{self.name}#{index}", row, self._columns, self.name, self._task)
        )
        self._index[sample.id] = index
        return sample

    def columns_of(self, sample_id: str) -> dict[str, Any]:
        """The other columns of the row a sample came from (not its image: rewards score text)."""
        index = self._index.get(sample_id)
        if index is None or self._samples:
            return {}
        row = self._rows[index]
        return {k: v for k, v in row.items() if k not in self._columns.prompt_columns()}


def _head(rows: Any) -> list:
    return [rows[i] for i in range(min(len(rows), 50))]


def _dict_rows(rows: Any) -> list[dict]:
    head = _head(rows)
    if not all(isinstance(r, dict) for r in head):
        kinds = sorted({type(r).__name__ for r in head})
        raise ValueError(f"rows must be dicts (or Samples, or a datasets.Dataset); got {', '.join(kinds)}")
    return head
