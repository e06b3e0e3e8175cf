"""The Qwen families' video inputs without torchvision: the patch layout on literal tensors, a still
video's patches against the image processor's, the placeholders the processor expands (Qwen3-VL's
timestamps), and the refusal of a family without video support."""

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_grpo.data import Sample
from vlm_grpo.data.videos import Video, VideoConfig
from vlm_grpo.errors import ConfigError
from vlm_grpo.models.families import family_named, refuse_video
from vlm_grpo.models.families.frames import FrameVideoProcessor, apply_video_settings, frame_sampling, patchify
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import encode_prompts
from vlm_grpo.tasks.styles import DEFAULT

CPU = torch.device("cpu")


def test_patchify_layout_on_literal_tensors():
    # 3 frames (padded to 4 by repeating the last), 2 channels, 8 x 12 pixels; patch 2, merge 2, temporal 2.
    T, C, H, W, p, m, tp = 3, 2, 8, 12, 2, 2, 2
    frames = np.arange(T * C * H * W, dtype=np.float32).reshape(T, C, H, W)
    patches, (t, h, w) = patchify(frames, p, m, tp)
    assert (t, h, w) == (2, 4, 6) and patches.shape == (t * h * w, C * tp * p * p)
    padded = np.concatenate([frames, frames[-1:]])
    for row in range(patches.shape[0]):
        # Row: frame pair, then merge block (row-major over h/m x w/m), then patch in the block (row-major).
        pair, rest = divmod(row, h * w)
        block, inner = divmod(rest, m * m)
        block_row, block_col = divmod(block, w // m)
        patch_row, patch_col = block_row * m + inner // m, block_col * m + inner % m
        for col in range(patches.shape[1]):
            # Column: channel, then frame in the pair, then the patch's pixels (row-major).
            channel, rest_col = divmod(col, tp * p * p)
            frame, pixel = divmod(rest_col, p * p)
            y, x = patch_row * p + pixel // p, patch_col * p + pixel % p
            assert patches[row, col] == padded[pair * tp + frame, channel, y, x], (row, col)


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen3-vl"])
def test_a_still_video_patchifies_as_its_image(family):
    """Two copies of one frame are what the image processor makes of that image (it repeats an image
    over the temporal patch): the frame path's normalisation and layout are the image processor's."""
    _, processor = build_tiny(family)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    sized = frame_sampling(processor).size(image.height, image.width)
    image = image.resize((sized[1], sized[0]))
    expected = processor.image_processor(images=[image], return_tensors="pt")
    video = FrameVideoProcessor(processor.image_processor)([np.stack([np.asarray(image)] * 2)])
    assert torch.equal(video["video_grid_thw"], expected["image_grid_thw"])
    assert (video["pixel_values_videos"] - expected["pixel_values"]).abs().max().item() < 1e-5


def _frames(count: int, size=(60, 44)) -> list[Image.Image]:
    return [Image.new("RGB", size, (30 * i, 80, 120)) for i in range(count)]


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_video_prompts_expand_one_token_per_merged_patch(family):
    model, processor = build_tiny(family)
    sample = Sample("v", None, "What moves?", 1, "clips", video=_frames(5))
    prompts = encode_prompts(processor, DEFAULT, [sample], CPU)
    grid = prompts.inputs["video_grid_thw"]
    assert grid[0, 0].item() == 3  # 5 frames at 2 fps, padded to frame pairs
    video_tokens = prompts.inputs["input_ids"] == model.config.video_token_id
    assert int(video_tokens.sum()) == int(grid.prod()) // 4
    assert torch.equal(prompts.inputs["mm_token_type_ids"] == 2, video_tokens)  # typed as video tokens
    text = processor.tokenizer.decode(prompts.inputs["input_ids"][0])
    if family == "qwen3-vl":  # frames i / 2 s, the pairs' mean times: 0.25, 1.25, 2.0
        assert text.count("<|vision_start|>") == 3 and "<0.2 seconds>" in text and "<2.0 seconds>" in text
    if family == "qwen2.5-vl":
        assert prompts.inputs["second_per_grid_ts"].tolist() == [1.0]  # a frame pair spans 1 s at 2 fps


def test_the_video_section_sets_the_frame_settings():
    _, processor = build_tiny("qwen2-vl")
    default = frame_sampling(processor)
    assert (default.fps, default.max_frames) == (2.0, 768)
    assert default.size(448, 448) == (112, 112)  # the tiny model's image budget, 112 x 112
    apply_video_settings(processor, VideoConfig(fps=1.0, max_frames=3, max_pixels=56 * 56))
    sampling = frame_sampling(processor)
    assert (sampling.fps, sampling.max_frames, sampling.size(448, 448)) == (1.0, 3, (56, 56))
    video = Sample("v", None, "q", 1, "d", video=_frames(10)).load_video(sampling)
    assert isinstance(video, Video) and video.indices == (0, 4, 9) and video.frames[0].size == (56, 56)


def test_a_family_without_video_refuses_in_one_line():
    refuse_video(family_named("qwen2.5-vl"), "row#0 has a video")  # takes video
    with pytest.raises(ConfigError) as caught:
        refuse_video(family_named("gemma3"), "row#3 has a video")
    message = str(caught.value)
    assert "\n" not in message and "row#3" in message and "gemma3" in message
    assert "qwen2-vl, qwen2.5-vl, qwen3-vl, qwen3-vl-moe" in message
