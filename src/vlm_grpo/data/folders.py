"""Folders in `datasets`' own conventions, read through `datasets`: one entry each in `FOLDERS`.

- A folder written by `save_to_disk` (`state.json`, or `dataset_dict.json` for a DatasetDict, whose split
  `data.split` picks).
- An image folder (`datasets`' ImageFolder): `metadata.jsonl`, `metadata.csv` or `metadata.parquet` rows
  name their image in `file_name` (or several in `file_names`), relative to the metadata file, at any depth
  and in any case of extension; sub-folders `train/`, `test/` ... each with their own metadata are splits.
A folder of neither kind is read as data files (`files.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .rows import Part, choose_split, table_part

METADATA = ("metadata.jsonl", "metadata.csv", "metadata.parquet")


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


def _is_image_folder(path: Path) -> bool:
    # The metadata sits at the top or in split folders (train/, or data/train/); not searched deeper, so a
    # folder of 70 k images is not walked to find out that it holds none.
    return any(next(path.glob(depth + name), None) for depth in ("", "*/", "*/*/") for name in METADATA)


def _read_image_folder(path: Path, split: str | None) -> list[Part]:
    import datasets

    try:
        splits = datasets.load_dataset("imagefolder", data_dir=str(path))
    except ValueError as exc:
        if "file_name" not in str(exc):
            raise
        raise ValueError(
            f"{path}: a metadata row has no file_name (its image's path relative to the metadata file; "
            "file_names for several)"
        ) from None
    return [table_part(choose_split(splits, split, str(path)), path, path.name)]


FOLDERS: tuple[tuple[Callable[[Path], bool], Callable[[Path, str | None], list[Part]]], ...] = (
    (_is_saved, _read_saved),
    (_is_image_folder, _read_image_folder),
)
"""(does a folder hold this kind, read its split), tried in order."""
