"""Video inputs of the Qwen families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), with or without torchvision.

A video reaches the model as `pixel_values_videos` (every frame patch, flattened) and `video_grid_thw`
(t, h, w per video: frame pairs, patch rows, patch columns), and its placeholder in the text is expanded
to one token per merged patch (Qwen3-VL: per frame pair, a `<t seconds>` timestamp and the pair's tokens
between vision start and end). The processor's own call does the text side for every family; what it
asks of its video processor is the pixel side:

- where torchvision imports, the family's own video processor, given frames the data layer already sampled
  and sized (`do_sample_frames=False`, `do_resize=False`), so that it only normalises and patchifies;
- where it does not (transformers' video processors need it), `FrameVideoProcessor`, which the
  torchvision-free processors (`WithFrames`) hold in its place: the same normalisation, read from the
  family's image processor (the same mean, std and patch sizes as its video processor), and the same
  patch layout (`patchify`, checked on literal tensors against the formula and against the image
  processor's patches of a still frame).

Either way the frames were sampled (fps, max_frames) and sized (a per-frame pixel budget) once, when the
sample's video was decoded (`data/videos.py`), by the settings `frame_sampling` reads from the processor.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from ...data.videos import FrameSampling, Video, VideoConfig
from .processors import ImageOnly

FRAME_TOKENS = 768
"""Vision tokens per frame at most, by default: Qwen's own per-frame cap (qwen-vl-utils' VIDEO_MAX_TOKEN_NUM,
Qwen2-VL's 28 x 28 x 768 pixels per frame)."""


def patchify(frames: np.ndarray, patch: int, merge: int, temporal: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Frames (T, C, H, W), H and W multiples of patch x merge, as the model's flat patches
    (t * h * w, C * temporal * patch * patch) and their grid (t, h, w). The last frame is repeated up to a
    multiple of `temporal`. Rows run over frame pairs, then merge blocks (row-major), then the patches
    inside a block (row-major); a row holds channel, then frame within the pair, then the patch's pixels:
    transformers' Qwen video processors' layout."""
    count, channels, height, width = frames.shape
    if pad := -count % temporal:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    t, h, w = frames.shape[0] // temporal, height // patch, width // patch
    blocks = frames.reshape(t, temporal, channels, h // merge, merge, patch, w // merge, merge, patch)
    # (t, h/m, w/m, m_h, m_w, C, temporal, p_h, p_w)
    blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return blocks.reshape(t * h * w, channels * temporal * patch * patch), (t, h, w)


def _of_images(name: str) -> property:
    return property(lambda self: getattr(self.image_processor, name), doc=f"The image processor's {name}.")


class FrameVideoProcessor:
    """A Qwen video processor without torchvision: sampled, sized frames in, flat patches out. Its
    normalisation and patch sizes are its image processor's (read when called, so a changed image
    processor is followed); `fps`, `max_frames` and `size` are the frame settings `frame_sampling` reads."""

    model_input_names = ["pixel_values_videos", "video_grid_thw"]
    patch_size = _of_images("patch_size")
    merge_size = _of_images("merge_size")
    temporal_patch_size = _of_images("temporal_patch_size")
    image_mean = _of_images("image_mean")
    image_std = _of_images("image_std")
    rescale_factor = _of_images("rescale_factor")
    resample = _of_images("resample")

    def __init__(self, image_processor, fps: float = 2.0, max_frames: int = 768, max_pixels: int | None = None):
        self.image_processor, self.fps, self.max_frames = image_processor, fps, max_frames
        factor = self.patch_size * self.merge_size
        ceiling = FRAME_TOKENS * factor * factor
        self.size = {
            "shortest_edge": _edge(image_processor, "shortest_edge") or factor * factor,
            "longest_edge": max_pixels or min(_edge(image_processor, "longest_edge") or ceiling, ceiling),
        }

    def __call__(self, videos, video_metadata=None, **kwargs) -> dict:
        """`videos`: frames (T, H, W, C) uint8 per video; returns the model inputs and, for the processor's
        timestamps and Qwen2.5-VL's seconds per grid step, each video's metadata."""
        patches, grids = [], []
        for frames in videos:
            flat, grid = patchify(self.normalised(np.asarray(frames)), *self._patch_sizes())
            patches.append(torch.from_numpy(np.ascontiguousarray(flat)))
            grids.append(grid)
        out = {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(grids, dtype=torch.long)}
        return {**out, "video_metadata": list(video_metadata or [])}

    def _patch_sizes(self) -> tuple[int, int, int]:
        return self.patch_size, self.merge_size, self.temporal_patch_size

    def normalised(self, frames: np.ndarray) -> np.ndarray:  # (T, H, W, C) uint8 -> (T, C, H, W) float32
        factor = self.patch_size * self.merge_size
        if frames.shape[1] % factor or frames.shape[2] % factor:
            raise ValueError(f"video frames of {frames.shape[2]} x {frames.shape[1]} are not sized for the model")
        scaled = frames.astype(np.float32) * np.float32(self.rescale_factor)
        mean, std = np.asarray(self.image_mean, np.float32), np.asarray(self.image_std, np.float32)
        return ((scaled - mean) / std).transpose(0, 3, 1, 2)


def _edge(processor, key: str) -> int | None:
    """`processor.size[key]` (a dict or transformers' SizeDict), None where it has none."""
    size = getattr(processor, "size", None)
    try:
        return size[key] if size is not None else None
    except (KeyError, TypeError):
        return None


class WithFrames(ImageOnly):
    """Mixin: a torchvision-free processor (`ImageOnly`) that takes videos through a `FrameVideoProcessor`
    built from its image processor (saved folders still hold no video settings: none are its own)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.video_processor = FrameVideoProcessor(image_processor)


def frame_sampling(processor) -> FrameSampling | None:
    """How the processor's videos are sampled and each frame sized: its video processor's fps, max_frames
    and per-frame pixel budget (`size`), frames resized as its image processor resizes images; None: the
    processor takes no videos."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    videos = getattr(processor, "video_processor", None)
    if videos is None:
        return None
    factor = videos.patch_size * videos.merge_size
    low, high = _edge(videos, "shortest_edge") or factor * factor, _edge(videos, "longest_edge")
    fit = functools.partial(smart_resize, factor=factor, min_pixels=low, max_pixels=high or FRAME_TOKENS * factor**2)
    fps = getattr(videos, "fps", None) or 2.0  # Qwen2-VL's processor samples no frames itself: qwen-vl-utils' 2
    max_frames = getattr(videos, "max_frames", None) or 768
    return FrameSampling(float(fps), int(max_frames), fit, int(getattr(videos, "resample", 3)))


def apply_video_settings(processor, settings: VideoConfig) -> None:
    """The run's `video` section written into the processor's video processor, where the frame settings
    live (as `max_pixels` lives in its image processor); unset keys keep the processor's own."""
    videos = getattr(processor, "video_processor", None)
    if videos is None:
        return
    if settings.fps is not None:
        videos.fps = settings.fps
    if settings.max_frames is not None:
        videos.max_frames = settings.max_frames
    if settings.max_pixels is not None:
        videos.size["longest_edge"] = settings.max_pixels


def video_call(processor, videos: list[Video]) -> dict:
    """The processor call's keyword arguments for `videos` (already sampled and sized)."""
    from transformers.video_utils import VideoMetadata

    metadata = [
        VideoMetadata(
            total_num_frames=v.total,
            fps=v.fps,
            width=v.frames[0].width,
            height=v.frames[0].height,
            frames_indices=list(v.indices),
        )
        for v in videos
    ]
    arrays = [np.stack([np.asarray(frame) for frame in v.frames]) for v in videos]
    options: dict[str, Any] = {"video_metadata": metadata}
    if not isinstance(processor.video_processor, FrameVideoProcessor):
        options.update(do_sample_frames=False, do_resize=False)  # sampled and sized when decoded
    return {"videos": arrays, "videos_kwargs": options}
