"""Folders in `datasets`' own conventions, read through `datasets`: one entry each in `FOLDERS`.

- A folder written by `save_to_disk` (`state.json`, or `dataset_dict.json` for a DatasetDict, whose split
  `data.split` picks).
- An image folder (`datasets`' ImageFolder): `metadata.jsonl`, `metadata.csv` or `metadata.parquet` rows
  name their image in `file_name` (or several in `file_names`), relative to the metadata file, at any depth
  and in any case of extension; sub-folders `train/`, `test/` ... each with their own metadata are splits.
  A folder whose `file_name`s are videos (`VIDEO_SUFFIXES`, any case) is read the same way, as `datasets`'
  VideoFolder, each row's video in a `video` column.
A folder of neither kind is read as data files (`files.py`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from .rows import Part, choose_split, table_part

METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".mpeg", ".mpg", ".m4v")
PEEK_ROWS = 50  # metadata rows whose file names say whether a folder holds images or videos


def read_folder(path: Path, split: str | None) -> list[Part] | None:
    """The chosen split of a folder in one of the `FOLDERS` kinds; None for a folder of neither kind."""
    for holds, read in FOLDERS:
        if holds(path):
            return read(path, split)
    return None


def _is_saved(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _read_saved(path: Path, split: str | None) -> list[Part]:
    import datasets

    saved = datasets.load_from_disk(str(path))
    splits = saved if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    return [table_part(choose_split(splits, split, str(path)), path, path.name)]


def _metadata_files(path: Path) -> list[Path]:
    # The metadata sits at the top or in split folders (train/, or data/train/); not searched deeper, so a
    # folder of 70 k images is not walked to find out that it holds none.
    return [found for depth in ("", "*/", "*/*/") for name in METADATA for found in sorted(path.glob(depth + name))]


def _is_media_folder(path: Path) -> bool:
    return bool(_metadata_files(path))


def _read_media_folder(path: Path, split: str | None) -> list[Part]:
    import datasets

    builder = _folder_builder(path)
    try:
        splits = datasets.load_dataset(builder, data_dir=str(path))
    except ValueError as exc:
        if "file_name" not in str(exc):
            raise
        raise ValueError(
            f"{path}: a metadata row has no file_name (its image's or video's path relative to the metadata "
            "file; file_names for several images)"
        ) from None
    return [table_part(choose_split(splits, split, str(path)), path, path.name)]


def _folder_builder(path: Path) -> str:
    """`videofolder` where the first metadata file's rows name videos, else `imagefolder`; both: an error."""
    names = _file_names(_metadata_files(path)[0])
    videos = [Path(name).suffix.lower() in VIDEO_SUFFIXES for name in names]
    if any(videos) and not all(videos):
        raise ValueError(
            f"{path}: the metadata's file_name names both images and videos; a folder holds one kind "
            "(name a row's video in a column of its own, `video`, beside an image's file_name)"
        )
    return "videofolder" if names and all(videos) else "imagefolder"


def _file_names(metadata: Path) -> list[str]:
    """The `file_name` of the metadata file's first rows (those that have one)."""
    if metadata.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(metadata)
        if "file_name" not in table.schema_arrow.names:
            return []
        batch = next(table.iter_batches(batch_size=PEEK_ROWS, columns=["file_name"]), None)
        rows = batch.to_pylist() if batch is not None else []
    elif metadata.suffix == ".csv":
        with metadata.open(newline="") as handle:
            rows = [row for row, _ in zip(csv.DictReader(handle), range(PEEK_ROWS))]
    else:
        with metadata.open() as handle:
            lines = [line for line, _ in zip((line for line in handle if line.strip()), range(PEEK_ROWS))]
        try:
            rows = [json.loads(line) for line in lines]
        except json.JSONDecodeError:  # `datasets` reads it next and names the line
            return []
    return [str(row["file_name"]) for row in rows if isinstance(row, dict) and row.get("file_name")]


FOLDERS: tuple[tuple[Callable[[Path], bool], Callable[[Path, str | None], list[Part]]], ...] = (
    (_is_saved, _read_saved),
    (_is_media_folder, _read_media_folder),
)
"""(does a folder hold this kind, read its split), tried in order."""
