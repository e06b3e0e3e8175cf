"""Qwen2-VL and Qwen2.5-VL: torchvision-free processors, M-RoPE prefix prefill, image-feature sharing,
pixel-budget resizing, videos (their tiny builders: `models/tiny/qwen.py`).

Processors. In transformers 5.x the Qwen2-VL processors also build a video processor, which
needs torchvision; without it `AutoProcessor` silently returns only the tokenizer. The subclasses
below (`ImageOnly...`, named for what transformers' own parts give them) leave that video processor out
and take videos through `frames.FrameVideoProcessor` instead; they load folders saved by the standard
ones and save folders that name the standard class; the adapter uses them where torchvision does not
import.

Videos. A video's frames come as `pixel_values_videos` with a grid per video (`frames.py`); M-RoPE
gives its tokens temporal positions from the grid (Qwen2.5-VL: scaled by `second_per_grid_ts`, the
seconds each frame pair spans), which `get_rope_index` computes from the same inputs as the forward.

Where the text after a video sits. The Qwen reference (transformers' Qwen2.5-VL pull request #35569), which
vLLM follows, starts it one past the video's largest M-RoPE position; transformers 5.x starts it at the
video's start plus the longer side of its merged grid, ignoring time. They agree for images and short
videos and part once the last frame pair's (time-scaled) position reaches that side. `video.positions`
picks the rule; `reference` wraps the model's `get_rope_index`, which every path (the forward, the
shared-prefix prefill, sampling) goes through.

Shared prefix. All G completions of a group share one image and one prompt. Prefilling each
distinct prompt once and repeating its KV cache for its rows is exact (attention over the cached
prefix is the same computation). Positions are passed explicitly: text after the prompt
continues one past the prompt's largest M-RoPE position on all three axes (the model would
otherwise reuse rope deltas it caches between calls). This relies on model internals checked for
these two families.
"""

from __future__ import annotations

import inspect
import itertools

import torch
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

from ..compat import cache_of
from .base import FamilyAdapter, base_model
from .frames import WithFrames


class ImageOnlyQwen2VLProcessor(WithFrames, Qwen2VLProcessor):
    standard_name = "Qwen2VLProcessor"


class ImageOnlyQwen2_5_VLProcessor(WithFrames, Qwen2_5_VLProcessor):
    standard_name = "Qwen2_5_VLProcessor"


class Qwen2VLAdapter(FamilyAdapter):
    family = "qwen2-vl"
    model_types = ("qwen2_vl",)
    supports_prefix = True
    supports_feature_sharing = True
    supports_video = True
    processor_class = Qwen2VLProcessor
    image_only_processor = ImageOnlyQwen2VLProcessor
    video_processor_type = "Qwen2VLVideoProcessor"
    turn_end_token = "<|im_end|>"

    # ------------------------------------------------------------ processors and tokens
    def end_token_ids(self, processor, model) -> list[int]:
        """<|im_end|> and the model's own EOS ids (no template rendering: this runs every step)."""
        try:
            turn_end = self.fallback_turn_end_id(processor.tokenizer)
        except ValueError:
            turn_end = None
        return self.with_eos_ids(model, turn_end)

    def fit_image(self, image, processor):
        """The image resized once to the size the Qwen2-VL image processor would give it, with its
        resampling, so the processor's own resize becomes a no-op on every later use."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        image_processor = processor.image_processor
        if not type(image_processor).__name__.startswith("Qwen2VLImageProcessor"):
            return image
        size = getattr(image_processor, "size", None) or {}
        factor = getattr(image_processor, "patch_size", 14) * getattr(image_processor, "merge_size", 2)
        height, width = smart_resize(
            image.height,
            image.width,
            factor=factor,
            min_pixels=size.get("shortest_edge", 56 * 56),
            max_pixels=size.get("longest_edge", 28 * 28 * 1280),
        )
        if (height, width) == (image.height, image.width):
            return image
        return image.resize((width, height), resample=int(getattr(image_processor, "resample", 3)))

    # ------------------------------------------------------------ shared-prefix passes
    def prefill(self, model, inputs: dict[str, torch.Tensor]):
        base = base_model(model)
        positions, _ = base.model.get_rope_index(
            inputs["input_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=inputs["attention_mask"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            # Videos' temporal positions (Qwen2.5-VL scales them by seconds per frame pair); None without.
            video_grid_thw=inputs.get("video_grid_thw"),
            second_per_grid_ts=inputs.get("second_per_grid_ts"),
        )
        out = model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
        return out.logits, cache_of(out), positions.amax(dim=(0, 2)) + 1

    def positions(self, start: torch.Tensor, length: int) -> torch.Tensor:  # (3, b, length)
        steps = torch.arange(length, device=start.device)
        return (start.unsqueeze(1) + steps).unsqueeze(0).expand(3, -1, -1)

    def image_features(self, model, pixel_values, image_grid_thw) -> tuple:
        features = base_model(model).model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
        return tuple(features.pooler_output)

    def video_features(self, model, pixel_values_videos, video_grid_thw) -> tuple:
        features = base_model(model).model.get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        return tuple(features.pooler_output)

    def use_video_positions(self, model, rule: str) -> None:
        if rule == "reference":
            inner = base_model(model).model
            inner.get_rope_index = reference_rope_index(inner.get_rope_index)

    def places_text_after_video_as_reference(self, model, grid: list[int], seconds: float | None) -> bool:
        """transformers' rule agrees with the reference while the last frame pair's position (1 apart for
        Qwen2-VL; tokens per second x `seconds` for Qwen2.5-VL) stays below the merged grid's longer side."""
        if getattr(base_model(model).model.get_rope_index, "follows_reference", False):
            return True
        vision = base_model(model).config.vision_config
        interval = 1.0 if seconds is None else float(vision.tokens_per_second) * seconds
        t, h, w = grid
        return int((t - 1) * interval) + 1 <= max(h, w) // vision.spatial_merge_size


def reference_rope_index(get_rope_index):
    """`get_rope_index` with the text after each video moved to one past the video's largest position (the
    Qwen reference's rule); images, and videos the two rules place alike, keep their positions."""
    signature = inspect.signature(get_rope_index)

    def reference(*args, **kwargs):
        positions, deltas = get_rope_index(*args, **kwargs)  # (3, B, L), (B, 1)
        given = signature.bind(*args, **kwargs).arguments
        kinds, attention = given["mm_token_type_ids"], given.get("attention_mask")
        positions, deltas = positions.clone(), deltas.clone()
        for row in range(positions.size(1)):
            kept = attention[row].bool() if attention is not None else torch.ones_like(kinds[row], dtype=torch.bool)
            placed, start = positions[:, row, kept], 0  # the row's tokens, padding left out
            for kind, run in itertools.groupby(kinds[row, kept].tolist()):  # text 0, image 1, video 2
                end = start + len(list(run))
                if kind == 2 and end < placed.size(1):  # what follows starts one past the video's largest position
                    placed[:, end:] += placed[:, start:end].max() + 1 - placed[0, end]
                start = end
            positions[:, row, kept] = placed
            deltas[row] = placed.max() + 1 - int(kept.sum())
        return positions, deltas

    reference.follows_reference = True
    return reference


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    family = "qwen2.5-vl"
    model_types = ("qwen2_5_vl",)
    processor_class = Qwen2_5_VLProcessor
    image_only_processor = ImageOnlyQwen2_5_VLProcessor
