"""Rows as the file, folder and hub readers hand them over, the Source over them, and split choice."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from ..tasks import Task
from .layouts import Columns, make_sample
from .samples import Sample

T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """Rows read together (one JSON file's, or one Arrow table's) and where their relative image paths start."""

    rows: Sequence[Mapping[str, Any]]
    root: Path | None
    label: str
    """Names its rows in messages and sample ids: `label#index`."""


def table_part(table: Any, root: Path | None, label: str) -> Part:
    """A `datasets.Dataset` as a part, its images and videos left encoded."""
    return Part(lazy_media(table), root, label)


def lazy_media(table: Any) -> Any:
    """A `datasets.Dataset` whose image and video columns stay encoded: decoding happens per sample, in the
    prompt stream, not for every row read (and a video as `{"bytes", "path"}`, for PyAV, not torchcodec).
    Lists of images stay as they are: recasting them rewrites the table."""
    import datasets

    for name, feature in (getattr(table, "features", None) or {}).items():
        if isinstance(feature, (datasets.Image, datasets.Video)) and feature.decode:
            table = table.cast_column(name, type(feature)(decode=False))
    return table


def choose_split(splits: Mapping[str, T], split: str | None, name: str) -> T:
    """The split `data.split` names (None: train), or a one-line error listing the splits there are."""
    wanted = split or "train"
    if wanted not in splits:
        raise ValueError(f"{name} has no split {wanted!r}; it has {', '.join(map(str, splits))} (set data.split)")
    return splits[wanted]


class RowSource:
    """Parts' rows, one after another, read as samples by one column layout."""

    always_split = False

    def __init__(self, name: str, parts: Sequence[Part], columns: Columns, domain: str, task: Task):
        self.name, self.columns, self._parts, self._domain, self._task = name, columns, parts, domain, task
        self._ends = list(itertools.accumulate(len(part.rows) for part in parts))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}: row {index} of {len(self)}")
        which = bisect.bisect_right(self._ends, index)
        part, local = self._parts[which], index - (self._ends[which - 1] if which else 0)
        sample = make_sample(f"{part.label}#{local}", part.rows[local], self.columns, self._domain, self._task)
        # Resolved once read: a chat row's media may sit in its messages as well as in its columns.
        return replace(sample, image=_resolve(sample.image, part.root), video=_resolve(sample.video, part.root))


def _resolve(image: Any, root: Path | None) -> Any:
    """Relative image or video paths (alone, in a list, or in a `{"bytes", "path"}` dict without bytes) under `root`;
    anything else (a decoded image, bytes, None) as it is."""
    if isinstance(image, (list, tuple)):
        return [_resolve(item, root) for item in image]
    if root is None:
        return image
    if isinstance(image, str) and not Path(image).is_absolute():
        return str(root / image)
    if isinstance(image, dict) and not image.get("bytes") and isinstance(image.get("path"), str):
        return {**image, "path": _resolve(image["path"], root)}
    return image
