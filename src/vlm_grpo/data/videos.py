"""A sample's video: decoded once into the frames a prompt shows, sampled by time and sized per frame.

A video is a file path, encoded bytes (anything PyAV opens: mp4, webm, avi, ...), a `{"bytes", "path"}`
dict as `datasets` stores files, or a list of frames (images, image files or encoded images, in order).
A file is sampled at `fps` frames per second of its own timeline, evenly, at most `max_frames`; a list of
frames is taken as already sampled at `fps` (frame i at i / fps seconds), thinned evenly to `max_frames`.
Kept frames are resized once, as the model's processor would (`FrameSampling.size`, given by the model
family), so the processor's own resize does nothing later. Files are decoded with PyAV (`pip install
vlm-grpo[video]`), imported only when a video file is decoded.

The `video` section (`VideoConfig`) holds the run's settings; where it leaves one unset the model family's
processor gives it (`models/families/frames.py`).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..config_sections import register_section
from ..errors import BadSample


@dataclass
class VideoConfig:
    """Video samples (a `video` column; Qwen2-VL, Qwen2.5-VL and Qwen3-VL families)."""

    fps: float | None = None
    """Frames sampled per second of video (None: the model family's processor's, 2 for the Qwen families)."""
    max_frames: int | None = None
    """Most frames sampled from one video, spread evenly over it (None: the processor's, 768 for Qwen)."""
    max_pixels: int | None = None
    """Pixel budget of each frame; frames are resized once when the video is decoded, keeping their aspect
    (None: the processor's, 768 vision tokens' worth for Qwen, at most the image budget)."""
    positions: str = "transformers"
    """Where Qwen2-VL and Qwen2.5-VL place the text after a video: transformers (transformers 5.x: the video's
    start plus its merged grid's longer side) | reference (one past the video's largest M-RoPE position, as
    the Qwen reference and vLLM do; what real checkpoints were trained with). They differ once a video's
    frame pairs outlast its merged grid's side (docs/engines.md, "Video")."""

    def check(self, cfg, need) -> None:
        need(
            self.positions in ("transformers", "reference"),
            f"video.positions={self.positions!r} is not one of transformers, reference",
        )
        need(self.fps is None or self.fps > 0, f"video.fps={self.fps} must be positive")
        need(self.max_frames is None or self.max_frames >= 1, f"video.max_frames={self.max_frames} must be >= 1")
        need(self.max_pixels is None or self.max_pixels >= 1, f"video.max_pixels={self.max_pixels} must be >= 1")


register_section("video", VideoConfig)


@dataclass(frozen=True)
class FrameSampling:
    """How one video becomes frames: `fps` and `max_frames`, and each kept frame's size."""

    fps: float = 2.0
    max_frames: int = 768
    size: Callable[[int, int], tuple[int, int]] | None = field(default=None, compare=False)
    """(height, width) -> the frame's (height, width) for the model; None: frames keep their size."""
    resample: int = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class Video:
    """A decoded video: the sampled frames (RGB, sized for the model) and where they sit in the source."""

    frames: tuple[Image.Image, ...]
    fps: float
    """Frames per second of the source (of a list of frames: the sampling fps they are taken at)."""
    indices: tuple[int, ...]
    """Each kept frame's index among the source's frames."""
    total: int
    """Frames in the source."""

    @property
    def timestamps(self) -> list[float]:
        """Each kept frame's time in seconds."""
        return [index / self.fps for index in self.indices]


def frame_indices(total: int, source_fps: float, fps: float, max_frames: int) -> list[int]:
    """The frames of a `total`-frame video at `source_fps` kept when sampling `fps` per second, evenly
    spread from the first frame to the last (at least one, at most `max_frames` and `total`)."""
    wanted = round(total / source_fps * fps) if source_fps > 0 else total
    count = max(1, min(wanted, max_frames, total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def decode_video(source: Any, sampling: FrameSampling, row_id: str) -> Video:
    """`source` (a file, bytes, a dict holding one, or a list of frames) as the frames `sampling` keeps."""
    if isinstance(source, Video):
        return source
    if callable(source):
        source = source()
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
    if isinstance(source, (list, tuple)):
        return _from_frames(list(source), sampling, row_id)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise BadSample(f"{row_id}: video file {source} does not exist")
    if not isinstance(source, (str, Path, bytes, bytearray)):
        raise BadSample(f"{row_id}: no video (got {type(source).__name__})")
    return _from_file(source, sampling, row_id)


def _from_frames(frames: list[Any], sampling: FrameSampling, row_id: str) -> Video:
    if not frames:
        raise BadSample(f"{row_id}: the video has no frames")
    keep = frame_indices(len(frames), sampling.fps, sampling.fps, sampling.max_frames)
    decoded = tuple(_sized(_frame_image(frames[i], row_id), sampling) for i in keep)
    return Video(decoded, sampling.fps, tuple(keep), len(frames))


def _frame_image(frame: Any, row_id: str) -> Image.Image:
    try:
        if isinstance(frame, dict):
            frame = frame.get("bytes") or frame.get("path")
        if isinstance(frame, (bytes, bytearray)):
            frame = Image.open(io.BytesIO(frame))
        elif isinstance(frame, (str, Path)):
            frame = Image.open(frame)
        elif isinstance(frame, np.ndarray):
            frame = Image.fromarray(frame)
        if not isinstance(frame, Image.Image):
            raise BadSample(f"{row_id}: a video frame is not an image (got {type(frame).__name__})")
        return frame.convert("RGB")
    except BadSample:
        raise
    except Exception as exc:  # PIL raises several types for a corrupt or missing file
        raise BadSample(f"{row_id}: a video frame cannot be decoded ({exc})") from exc


def _from_file(source: str | Path | bytes | bytearray, sampling: FrameSampling, row_id: str) -> Video:
    try:
        import av
    except ImportError as exc:
        raise ImportError("decoding video files needs PyAV: pip install 'vlm-grpo[video]'") from exc
    opened = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with av.open(opened) as container:
            stream = container.streams.video[0]
            source_fps = float(stream.average_rate or stream.guessed_rate or 24)
            # The header's count where it has one; else the packets, counted without decoding.
            total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        if isinstance(opened, io.BytesIO):
            opened.seek(0)
        keep = frame_indices(total, source_fps, sampling.fps, sampling.max_frames)
        frames = _decode_at(opened, set(keep), keep[-1])
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise BadSample(f"{row_id}: video cannot be decoded ({exc})") from exc
    if not frames:
        raise BadSample(f"{row_id}: the video has no frames")
    kept = [i for i in keep if i in frames]  # a header may count frames the stream does not hold
    return Video(tuple(_sized(frames[i], sampling) for i in kept), source_fps, tuple(kept), total)


def _decode_at(opened: Any, wanted: set[int], last: int) -> dict[int, Image.Image]:
    """The frames at `wanted` indices, decoding in order and stopping after `last`."""
    import av

    out: dict[int, Image.Image] = {}
    with av.open(opened) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                out[index] = frame.to_image().convert("RGB")
            if index >= last:
                break
    return out


def _sized(frame: Image.Image, sampling: FrameSampling) -> Image.Image:
    if sampling.size is None:
        return frame
    height, width = sampling.size(frame.height, frame.width)
    if (height, width) == (frame.height, frame.width):
        return frame
    return frame.resize((width, height), resample=int(sampling.resample))
