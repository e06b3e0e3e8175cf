"""Data sets read from files, folders or the hub, as rows for the column layouts (`layouts.py`).

What a data spec names is found by what it is:
- a data file, one entry each in `READERS`: `.jsonl`, `.json` (a list of rows), `.csv`, `.parquet`;
  several: a glob (`data/*.jsonl`) or a list of paths, of one kind;
- a folder: `datasets`' `save_to_disk` output or an image folder with metadata (`folders.py`), else its
  data files, split by their names as the hub splits them (`train-00000.parquet`, `test.jsonl`; others: train);
- a hub id (`org/name`).
`data.split` picks a folder's or hub set's split (default train). JSON files are read whole as Python rows,
so each row keeps its own types (one Arrow schema would turn "007" into 7, or refuse rows whose types
differ); CSV cells are read as the text they are. CSV, parquet, folders and hub sets are read through
`datasets` (memory-mapped Arrow), so a 70 k-image set never sits decoded in memory. A relative image path is
read from `data.images`, else from the folder named, else from its data file's folder.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..tasks import Task
from .folders import METADATA, read_folder
from .layouts import find_columns
from .rows import Part, RowSource, choose_split, table_part

Spec = str | Sequence[str]


@dataclass(frozen=True)
class Reader:
    read: Callable[[list[Path]], Any]
    """Rows of the files: a list of dicts, or a `datasets.Dataset`."""
    per_file: bool
    """Each file its own part (its rows named by the file, its images beside it), or one table for all."""


def file_source(spec: Spec, images: str | None, task: Task, mapping: Mapping[str, str], split: str | None) -> RowSource:
    """The samples of `spec`'s rows (its `split`), each field in the column `mapping` names or the layout finds."""
    name = spec if isinstance(spec, str) else ", ".join(spec)
    short = Path(spec).name or spec if isinstance(spec, str) else name
    parts = read_spec(spec, split)
    if images:
        parts = [replace(part, root=Path(images)) for part in parts]
    if not any(len(part.rows) for part in parts):
        raise ValueError(f"{name} holds no rows")
    columns = find_columns(_head(parts), mapping, short)
    domain = "clevr" if columns.question == "problem" else Path(short).stem or short
    return RowSource(name, parts, columns, domain, task)


def is_file_spec(spec: Spec) -> bool:
    """Whether `spec` names files, a folder or a hub id (rather than a registered name)."""
    if not isinstance(spec, str):
        return True
    path = Path(spec)
    return glob.has_magic(spec) or path.exists() or path.suffix.lower() in READERS or "/" in spec


def read_spec(spec: Spec, split: str | None) -> list[Part]:
    """The rows of the files, folder or hub set `spec` names, its `split` (None: train)."""
    if not isinstance(spec, str):
        return _read_named_files([Path(s) for s in spec], split, ", ".join(spec))
    path = Path(spec)
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"no data files match {spec}")
        return _read_named_files(files, split, spec)
    if path.is_dir():
        return read_folder(path, split) or read_files(_folder_files(path, split), path.name, path)
    if path.suffix.lower() in READERS:
        return _read_named_files([path], split, spec)
    return _read_hub(spec, split)


def read_files(files: list[Path], label: str, root: Path | None) -> list[Part]:
    """The rows of data files of one kind; `root` (None: each file's folder) holds their relative images."""
    kinds = sorted({f.suffix.lower() for f in files})
    if len(kinds) != 1 or kinds[0] not in READERS:
        raise ValueError(f"{label}: data files are of one kind ({', '.join(READERS)}); got {', '.join(kinds)}")
    for file in files:
        if file.stat().st_size == 0:
            raise ValueError(f"{file} is empty")
    reader, base = READERS[kinds[0]], Path(os.path.commonpath([f.parent for f in files]))
    if reader.per_file:
        return [Part(reader.read([f]), root or f.parent, f.relative_to(base).as_posix()) for f in files]
    return [table_part(reader.read(files), root or base, Path(label).name or label)]


def _read_named_files(files: list[Path], split: str | None, label: str) -> list[Part]:
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"data file {file} does not exist")
    # Named files are one split: data.split names another only where a folder or hub set holds several.
    return read_files(choose_split({"train": files}, split, label), label, None)


def _folder_files(path: Path, split: str | None) -> list[Path]:
    """The data files of a folder's split, as `datasets` tells splits apart by file and folder names."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), str(path))
    except FileNotFoundError:  # `datasets`' word for a folder with no files it knows
        found = DataFilesDict()
    splits = {str(name): [Path(f) for f in files if Path(f).suffix.lower() in READERS] for name, files in found.items()}
    splits = {name: files for name, files in splits.items() if files}
    if not splits:
        raise ValueError(
            f"{path} holds no data files ({', '.join(READERS)}), no image metadata ({', '.join(METADATA)}) "
            "and no save_to_disk output"
        )
    return choose_split(splits, split, str(path))


def _read_hub(spec: str, split: str | None) -> list[Part]:
    import datasets

    try:
        table = datasets.load_dataset(spec, split=split or "train")
    except ValueError as exc:
        if not str(exc).startswith("Unknown split"):
            raise
        raise ValueError(f"{spec}: {exc} (set data.split)") from None
    return [table_part(table, None, Path(spec).name or spec)]


def _head(parts: Sequence[Part], count: int = 50) -> list[Mapping[str, Any]]:
    """The first `count` rows over all parts: what the layout is found from."""
    head: list[Mapping[str, Any]] = []
    for part in parts:
        head += [part.rows[i] for i in range(min(len(part.rows), count - len(head)))]
    return head


def _read_jsonl(files: list[Path]) -> list[dict]:
    rows = []
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if line.strip():
                rows.append(_parse(line, f"{file}, line {number}"))
    return _objects(rows, files)


def _read_json(files: list[Path]) -> list[dict]:
    rows = []
    for file in files:
        text = file.read_text()
        if not text.lstrip().startswith("["):  # JSON Lines under a .json name, as the hub often has them
            rows += _read_jsonl([file])
            continue
        rows += _parse(text, str(file))
    return _objects(rows, files)


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = where if exc.lineno == 1 else f"{where}, line {exc.lineno}"
        raise ValueError(f"{where}: not valid JSON ({exc.msg})") from exc


def _objects(rows: list, files: list[Path]) -> list[dict]:
    odd = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if odd is not None:
        raise ValueError(f"{files[0]}: row {odd} is {type(rows[odd]).__name__}, not an object of columns")
    return rows


def _read_csv(files: list[Path]) -> Any:
    import datasets

    headers = {tuple(_csv_header(file)) for file in files}
    if len(headers) != 1:
        raise ValueError(f"{files[0].parent}: the CSV files have different columns ({sorted(headers)})")
    # Every cell as its text (a blank one as ""): the task reads answers from text, and "007" stays itself.
    features = datasets.Features({column: datasets.Value("string") for column in headers.pop()})
    data_files = [str(file) for file in files]
    return datasets.load_dataset("csv", data_files=data_files, split="train", features=features, keep_default_na=False)


def _csv_header(file: Path) -> list[str]:
    with file.open(newline="") as handle:
        reader = csv.reader(handle)
        header, first = next(reader, None), next(reader, None)
    if not header or first is None:
        raise ValueError(f"{file} holds no rows")
    return header


def _read_parquet(files: list[Path]) -> Any:
    import datasets

    return datasets.load_dataset("parquet", data_files=[str(file) for file in files], split="train")


READERS: dict[str, Reader] = {
    ".jsonl": Reader(_read_jsonl, per_file=True),
    ".json": Reader(_read_json, per_file=True),
    ".csv": Reader(_read_csv, per_file=False),
    ".parquet": Reader(_read_parquet, per_file=False),
}
"""Data file kinds by suffix (lower case)."""
