"""The Sample type and the Source protocol every data set implements."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ..errors import BadSample
from .videos import FrameSampling, Video, decode_video


@dataclass(frozen=True)
class Sample:
    id: str
    image: Any
    """A PIL image, encoded bytes, a file path, a datasets image dict, a zero-argument callable, or a
    list of one of them (a row's list of images)."""
    question: str
    """The question as put to the model (for multiple choice, with its lettered choices)."""
    answer: Any
    """The ground truth as the task reads it (an int for counting, a `Choice` for multiple choice)."""
    domain: str
    calls: tuple[dict, ...] = ()
    """Tool calls a demonstration makes before it answers (`{"name": ..., "arguments": {...}}`, in
    order), for data sets whose answer needs a tool; empty: a demonstration answers at once."""
    video: Any = None
    """A video the prompt shows before its images (`data/videos.py`: a file path, encoded bytes, a list of
    frames, or a decoded `Video`); None: no video. A sample with a video may have no image (`image` None)."""

    def load_images(self) -> list[Image.Image]:
        """Every image of the row, decoded, in order (a prompt shows them all, in this order); a sample
        with a video may have none."""
        sources = self.image if isinstance(self.image, (list, tuple)) else [self.image]
        if self.video is not None and (self.image is None or not sources):
            return []
        if not sources:
            raise BadSample(f"{self.id}: no image")
        return [self._decode(source) for source in sources]

    def load_video(self, sampling: FrameSampling | None = None) -> Video | None:
        """The video's frames as `sampling` keeps them (decoded once: a decoded video is returned as it
        is); None without a video."""
        if self.video is None:
            return None
        return decode_video(self.video, sampling or FrameSampling(), self.id)

    def _decode(self, source: Any) -> Image.Image:
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

    def with_decoded_images(
        self, prepare: Callable[[Image.Image], Image.Image] | None = None, frames: FrameSampling | None = None
    ) -> Sample:
        """The sample with its images decoded (and prepared) once: one image, or a list of several; and
        its video, if any, decoded into the frames `frames` keeps (None: left as it is, for the prompt's
        encoding to decode with the model's settings)."""
        images = [prepare(i) if prepare is not None else i for i in self.load_images()]
        sample = self.with_image(images[0] if len(images) == 1 else images)
        return sample if self.video is None or frames is None else replace(sample, video=self.load_video(frames))

    def with_image(self, image: Any) -> Sample:
        return replace(self, image=image)


class Source(Protocol):
    """A random-access, lazy data set: images are decoded only when a sample is used."""

    name: str
    always_split: bool
    """True for sets the training rows are drawn from by default (rendered sets): evaluation keeps
    the fixed held-out split even when the set is not the training set."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...
