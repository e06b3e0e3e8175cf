"""Counting data: the Sample type, sources, a fixed held-out split and a resumable prompt stream.

A source is random access and lazy: images are decoded only when a sample is used, so a
70 k-image parquet set (read through `datasets`, memory-mapped Arrow) never sits decoded in
memory. Sources:
- `lab-clevr`, `lab-superclevr`: scenes rendered on demand by the counting lab;
- a CLEVR-cogen parquet file/folder or hub id (`image`, `problem`, `solution` = `<answer> N </answer>`);
- a SuperCLEVR-style jsonl (`image_path`, `question`, `ground_truth`) with an images root;
- a generic jsonl/parquet (`image` path or bytes, `question`, integer `answer`).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from PIL import Image

LAB_SIZE = 1_000_000  # nominal rows of a rendered lab set: row i is the scene of seed i
SPLIT_SEED = 20250114  # fixed, independent of the run seed, so every run holds out the same rows


class BadSample(ValueError):
    """A row that cannot be used; the message names the row and what is wrong."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: Any
    """A PIL image, encoded bytes, a file path, a datasets image dict, or a zero-argument callable."""
    question: str
    answer: int
    domain: str

    def load_image(self) -> Image.Image:
        source = self.image
        try:
            if callable(source):
                source = source()
            if isinstance(source, dict):
                source = source.get("bytes") or source.get("path")
            if isinstance(source, (bytes, bytearray)):
                source = Image.open(io.BytesIO(source))
            elif isinstance(source, (str, Path)):
                path = Path(source)
                if not path.is_file():
                    raise BadSample(f"{self.id}: image file {path} does not exist")
                source = Image.open(path)
            if not isinstance(source, Image.Image):
                raise BadSample(f"{self.id}: no image (got {type(source).__name__})")
            image = source.convert("RGB")
        except BadSample:
            raise
        except Exception as exc:  # PIL raises several types for a corrupt file
            raise BadSample(f"{self.id}: image cannot be decoded ({exc})") from exc
        if min(image.size) < 1:
            raise BadSample(f"{self.id}: image has zero size {image.size}")
        return image


class Source(Protocol):
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def parse_answer_field(value: Any, row: str) -> int:
    """An integer answer from an int, a digit string, or CLEVR-cogen's `<answer> N </answer>`."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(?:<answer>)?\s*(-?\d+)\s*(?:</answer>)?\s*", value)
        if match:
            return int(match.group(1))
    raise BadSample(f"{row}: answer {value!r} is not an integer")


def make_sample(row_id: str, image: Any, question: Any, answer: Any, domain: str) -> Sample:
    if not isinstance(question, str) or not question.strip():
        raise BadSample(f"{row_id}: the question is empty")
    if image is None:
        raise BadSample(f"{row_id}: no image")
    return Sample(row_id, image, question.strip(), parse_answer_field(answer, row_id), domain)


class LabSource:
    """Scenes of the counting lab, rendered when asked for."""

    def __init__(self, domain: str, size: int = 112):
        from .lab import scenes

        if domain not in scenes.DOMAINS:
            raise ValueError(f"unknown lab domain {domain!r}; choose {', '.join(scenes.DOMAINS)}")
        self.name, self.domain, self.size = domain, domain, size
        self._render = scenes.render_scene

    def __len__(self) -> int:
        return LAB_SIZE

    def __getitem__(self, index: int) -> Sample:
        image, scene = self._render(self.domain, index, size=self.size)
        return Sample(f"{self.domain}/{index}", image, scene.question, scene.count, self.domain)


class RowSource:
    """Rows from a jsonl file or an Arrow table, mapped to samples by a column layout."""

    def __init__(self, name: str, rows: Any, get: Callable[[Any, int], Sample]):
        self.name, self._rows, self._get = name, rows, get

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Sample:
        return self._get(self._rows[index], index)


def _row_layout(columns: set[str], name: str, root: Path | None, domain: str) -> Callable[[dict, int], Sample]:
    def resolve(path: Any) -> Any:
        if isinstance(path, str) and root is not None and not Path(path).is_absolute():
            return str(root / path)
        return path

    if {"image", "problem", "solution"} <= columns:  # CLEVR-cogen
        return lambda r, i: make_sample(f"{name}#{i}", resolve(r["image"]), r["problem"], r["solution"], domain)
    if {"image_path", "question", "ground_truth"} <= columns:  # SuperCLEVR-200 (R1-V)
        return lambda r, i: make_sample(f"{name}#{i}", resolve(r["image_path"]), r["question"], r["ground_truth"], domain)
    if {"image", "question", "answer"} <= columns:  # generic
        return lambda r, i: make_sample(f"{name}#{i}", resolve(r["image"]), r["question"], r["answer"], domain)
    raise ValueError(
        f"{name}: columns {sorted(columns)} match no known layout; expected (image, question, answer), "
        "(image, problem, solution) or (image_path, question, ground_truth)"
    )


def _jsonl_source(path: Path, images: str | None) -> RowSource:
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
    return RowSource(str(path), rows, _row_layout(columns, path.name, root, domain=path.stem))


def _arrow_source(spec: str, images: str | None) -> RowSource:
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
    return RowSource(spec, table, _row_layout(set(table.column_names), path.name or spec, root, domain))


def open_source(spec: str, images: str | None = None) -> Source:
    """A registered name, a .jsonl/.parquet file, a folder of parquet files, or a hub id."""
    if spec in ("lab-clevr", "lab-superclevr"):
        return LabSource(spec)
    path = Path(spec)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        return _jsonl_source(path, images)
    if path.suffix == ".parquet" or path.is_dir() or "/" in spec:
        if path.suffix == ".parquet" and not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        return _arrow_source(spec, images)
    raise ValueError(f"unknown data set {spec!r}: use lab-clevr, lab-superclevr, a .jsonl/.parquet path, or a hub id")


def split_indices(n: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) row indices: a fixed permutation, the first `holdout` rows held out."""
    holdout = min(holdout, n // 2)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


class PromptStream:
    """Training prompts in a seeded order, epoch after epoch; its state resumes exactly."""

    def __init__(self, source: Source, indices: np.ndarray, seed: int, on_bad_sample: str = "skip",
                 log: Callable[[str], None] = print, check: Callable[[Sample], None] | None = None,
                 prepare: Callable[[Image.Image], Image.Image] | None = None):
        if len(indices) == 0:
            raise ValueError(f"{source.name}: no training rows left after the held-out split")
        self.source, self.indices, self.seed = source, indices, seed
        self.on_bad_sample, self.log, self.check, self.prepare = on_bad_sample, log, check, prepare
        self.epoch, self.position, self.skipped = 0, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))

    def next_batch(self, count: int) -> list[Sample]:
        batch: list[Sample] = []
        attempts = 0
        while len(batch) < count:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            index = int(self.indices[self._order[self.position]])
            self.position += 1
            attempts += 1
            try:
                sample = self.source[index]
                image = sample.load_image()
                image = self.prepare(image) if self.prepare is not None else image
                sample = Sample(sample.id, image, sample.question, sample.answer, sample.domain)
                if self.check is not None:
                    self.check(sample)
            except BadSample as exc:
                if self.on_bad_sample == "error":
                    raise
                self.skipped += 1
                self.log(f"skipping bad sample: {exc}")
                if attempts > 10 * len(self.indices) + count:
                    raise ValueError(f"{self.source.name}: no usable rows (every row was skipped)") from exc
                continue
            batch.append(sample)
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.skipped = state["epoch"], state["position"], state["skipped"]
        self._order = self._permutation()


def eval_samples(source: Source, indices: np.ndarray, count: int) -> list[Sample]:
    """The first `count` usable held-out samples, in a fixed order (images decoded lazily later)."""
    chosen: list[Sample] = []
    for index in indices:
        if len(chosen) == count:
            break
        try:
            chosen.append(source[int(index)])
        except BadSample:
            continue
    return chosen
