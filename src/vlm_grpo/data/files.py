"""Data sets read from files or the hub: jsonl, parquet files and folders, hub ids.

Layouts (chosen by the columns present):
- CLEVR-cogen (`image`, `problem`, `solution` = `<answer> N </answer>`);
- SuperCLEVR-200 as R1-V ships it (`image_path`, `question`, `ground_truth`) with an images root;
- generic (`image` path or bytes, `question`, `answer`).
Parquet and hub sets are read through `datasets` (memory-mapped Arrow), so a 70 k-image set never
sits decoded in memory. Answers are read by the task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadSample
from .samples import Sample

ReadAnswer = Callable[[Any, str], Any]


def make_sample(row_id: str, image: Any, question: Any, answer: Any, domain: str, read_answer: ReadAnswer) -> Sample:
    if not isinstance(question, str) or not question.strip():
        raise BadSample(f"{row_id}: the question is empty")
    if image is None:
        raise BadSample(f"{row_id}: no image")
    return Sample(row_id, image, question.strip(), read_answer(answer, row_id), domain)


class RowSource:
    """Rows from a jsonl file or an Arrow table, mapped to samples by a column layout."""

    always_split = False

    def __init__(self, name: str, rows: Any, get: Callable[[Any, int], Sample]):
        self.name, self._rows, self._get = name, rows, get

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:
        return self._get(self._rows[index], index)


# (required columns, image column, question column, answer column), tried in order.
_LAYOUTS = (
    ({"image", "problem", "solution"}, "image", "problem", "solution"),  # CLEVR-cogen
    ({"image_path", "question", "ground_truth"}, "image_path", "question", "ground_truth"),  # SuperCLEVR-200 (R1-V)
    ({"image", "question", "answer"}, "image", "question", "answer"),  # generic
)


def _row_layout(
    columns: set[str], name: str, root: Path | None, domain: str, read_answer: ReadAnswer
) -> Callable[[dict, int], Sample]:
    def resolve(path: Any) -> Any:
        if isinstance(path, str) and root is not None and not Path(path).is_absolute():
            return str(root / path)
        return path

    for required, image, question, answer in _LAYOUTS:
        if required <= columns:
            return lambda r, i: make_sample(
                f"{name}#{i}", resolve(r[image]), r[question], r[answer], domain, read_answer
            )
    raise ValueError(
        f"{name}: columns {sorted(columns)} match no known layout; expected (image, question, answer), "
        "(image, problem, solution) or (image_path, question, ground_truth)"
    )


def jsonl_source(path: Path, images: str | None, read_answer: ReadAnswer) -> RowSource:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg})") from exc
    if not rows:
        raise ValueError(f"{path} holds no rows")
    columns = set().union(*(r.keys() for r in rows[:50]))
    root = Path(images) if images else path.parent
    return RowSource(str(path), rows, _row_layout(columns, path.name, root, path.stem, read_answer))


def arrow_source(spec: str, images: str | None, read_answer: ReadAnswer) -> RowSource:
    import datasets

    path = Path(spec)
    if path.exists():
        files = sorted(str(p) for p in path.glob("**/*.parquet")) if path.is_dir() else [str(path)]
        if not files:
            raise ValueError(f"{path} holds no parquet files")
        table = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        table = datasets.load_dataset(spec, split="train")
    if "image" in table.column_names:
        table = table.cast_column("image", datasets.Image(decode=False))  # decode lazily, per sample
    root = Path(images) if images else (path if path.is_dir() else path.parent) if path.exists() else None
    domain = "clevr" if "problem" in table.column_names else path.stem or spec
    return RowSource(spec, table, _row_layout(set(table.column_names), path.name or spec, root, domain, read_answer))
