"""Data sets read from files or the hub: jsonl, parquet files and folders, hub ids.

Layouts (chosen by the columns present, unless `data.columns` names them):
- CLEVR-cogen (`image`, `problem`, `solution` = `<answer> N </answer>`);
- SuperCLEVR-200 as R1-V ships it (`image_path`, `question`, `ground_truth`) with an images root;
- generic (`image` a path, bytes or a list of them, `question`, `answer`, optional `choices`).
Parquet and hub sets are read through `datasets` (memory-mapped Arrow), so a 70 k-image set never
sits decoded in memory. The task turns a row's question, answer and choices into the prompt's
question and the ground truth (`Task.read_sample`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadSample
from ..tasks import Task
from .samples import Sample

FIELDS = ("image", "question", "answer", "choices")


def make_sample(row_id: str, row: dict, names: dict[str, str], domain: str, task: Task) -> Sample:
    """A sample from one row whose columns for each field are `names`; the task reads the rest."""
    question, image = row.get(names["question"]), row.get(names["image"])
    if not isinstance(question, str) or not question.strip():
        raise BadSample(f"{row_id}: the question is empty")
    if image is None or (isinstance(image, (list, tuple)) and not image):
        raise BadSample(f"{row_id}: no image")
    fields = {"choices": row.get(names["choices"])} if names.get("choices") in row else {}
    question, target = task.read_sample(question.strip(), row.get(names["answer"]), fields, row_id)
    return Sample(row_id, image, question, target, domain)


class RowSource:
    """Rows from a jsonl file or an Arrow table, mapped to samples by a column layout."""

    always_split = False

    def __init__(self, name: str, rows: Any, get: Callable[[Any, int], Sample]):
        self.name, self._rows, self._get = name, rows, get

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:
        return self._get(self._rows[index], index)


# Known layouts: the columns holding (image, question, answer), tried in order.
_LAYOUTS = (
    ("image", "problem", "solution"),  # CLEVR-cogen
    ("image_path", "question", "ground_truth"),  # SuperCLEVR-200 (R1-V)
    ("image", "question", "answer"),  # generic
)


def column_names(columns: set[str], mapping: dict[str, str], name: str) -> dict[str, str]:
    """Which column holds each field: `mapping` (data.columns) first, else the first layout that fits."""
    missing = sorted(f"{field}={col}" for field, col in mapping.items() if col not in columns)
    if missing:
        raise ValueError(
            f"{name}: data.columns names columns it does not have ({', '.join(missing)}); it has {sorted(columns)}"
        )
    for layout in _LAYOUTS:
        names = {**dict(zip(FIELDS, layout)), "choices": "choices", **mapping}
        if all(names[f] in columns for f in FIELDS[:3]):
            return names
    raise ValueError(
        f"{name}: columns {sorted(columns)} match no known layout; expected (image, question, answer), "
        "(image, problem, solution) or (image_path, question, ground_truth), or name them with data.columns"
    )


def _row_reader(
    names: dict[str, str], name: str, root: Path | None, domain: str, task: Task
) -> Callable[[Any, int], Sample]:
    def resolve(path: Any) -> Any:
        if isinstance(path, (list, tuple)):
            return [resolve(p) for p in path]
        if isinstance(path, str) and root is not None and not Path(path).is_absolute():
            return str(root / path)
        return path

    def read(row: dict, index: int) -> Sample:
        return make_sample(
            f"{name}#{index}", {**row, names["image"]: resolve(row.get(names["image"]))}, names, domain, task
        )

    return read


def jsonl_source(path: Path, images: str | None, task: Task, mapping: dict[str, str]) -> RowSource:
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
    names = column_names(set().union(*(r.keys() for r in rows[:50])), mapping, path.name)
    root = Path(images) if images else path.parent
    return RowSource(str(path), rows, _row_reader(names, path.name, root, path.stem, task))


def arrow_source(spec: str, images: str | None, task: Task, mapping: dict[str, str]) -> RowSource:
    import datasets

    path = Path(spec)
    if path.exists():
        files = sorted(str(p) for p in path.glob("**/*.parquet")) if path.is_dir() else [str(path)]
        if not files:
            raise ValueError(f"{path} holds no parquet files")
        table = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        table = datasets.load_dataset(spec, split="train")
    names = column_names(set(table.column_names), mapping, path.name or spec)
    if isinstance(table.features[names["image"]], datasets.Image):
        table = table.cast_column(names["image"], datasets.Image(decode=False))  # decode lazily, per sample
    root = Path(images) if images else (path if path.is_dir() else path.parent) if path.exists() else None
    domain = "clevr" if names["question"] == "problem" else path.stem or spec
    return RowSource(spec, table, _row_reader(names, path.name or spec, root, domain, task))
