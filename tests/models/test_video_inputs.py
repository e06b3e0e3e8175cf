"""The Qwen families' video inputs without torchvision: the patch layout on literal tensors, a still
video's patches against the image processor's, the placeholders the processor expands (Qwen3-VL's
timestamps), and the refusal of a family without video support."""

import os

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


@pytest.mark.parametrize(
    "family, grid, expected_next",
    [
        # Qwen2.5-VL: 2 frame pairs 1 s apart at 4 tokens per second, temporal positions 19 and 23. The
        # reference puts the next text at the largest position + 1 = 24; transformers 5.x at 19 + 4 / 2.
        ("qwen2.5-vl", (2, 4, 4), (24, 21)),
        # Qwen2-VL: 3 frame pairs on a 2 x 2 merged grid, temporal positions 19-21: 22 against 19 + 2.
        ("qwen2-vl", (3, 4, 4), (22, 21)),
        # One frame pair: no time to span, the two rules agree.
        ("qwen2.5-vl", (1, 4, 4), (21, 21)),
    ],
)
def test_text_after_a_video_sits_where_transformers_puts_it_not_where_the_reference_does(family, grid, expected_next):
    """Why the vllm engine refuses some videos: the Qwen reference (transformers' Qwen2.5-VL
    pull request #35569, and vLLM) starts the text after a vision block one past the block's largest
    M-RoPE position; transformers 5.x starts it at the block's start plus its merged height or width,
    whichever is larger, ignoring the time axis. The two agree for images, and for videos whose
    (time-scaled) frame pairs span no more than the merged grid's side (Qwen2-VL's short clips); for
    Qwen2.5-VL's scaled time they part, so vLLM and the trainer score a video prompt's text and answer
    at other positions. This pins transformers' rule: when it fails, transformers follows the
    reference and the refusal can go."""
    model, _ = build_tiny(family, size="small")
    config = model.config
    video_id = config.video_token_id
    tokens = grid[0] * grid[1] * grid[2] // 4  # 2 x 2 patches merge into one token
    ids = torch.tensor([[1] * 19 + [video_id] * tokens + [1] * 5])
    kinds = (ids == video_id).int() * 2  # text 0, image 1, video 2
    extra = {"second_per_grid_ts": torch.tensor([1.0])} if family == "qwen2.5-vl" else {}
    if family == "qwen2.5-vl":
        assert config.vision_config.tokens_per_second == 4
    positions, _ = model.model.get_rope_index(
        ids, mm_token_type_ids=kinds, video_grid_thw=torch.tensor([grid]), attention_mask=torch.ones_like(ids), **extra
    )
    reference, transformers_rule = expected_next
    video = positions[:, 0, 19 : 19 + tokens]
    assert int(video.max()) + 1 == reference
    assert positions[:, 0, 19 + tokens].tolist() == [transformers_rule] * 3
    seconds = 1.0 if family == "qwen2.5-vl" else None
    agrees = family_named(family).places_text_after_video_as_reference(model, list(grid), seconds)
    assert agrees == (reference == transformers_rule)
    # video.positions=reference: the reference's place, the text counting on from it; a left-padded row of a
    # batch (three pad tokens) gets the same positions, and the cached offset follows them.
    family_named(family).use_video_positions(model, "reference")
    assert family_named(family).places_text_after_video_as_reference(model, list(grid), seconds)
    padded = torch.cat([torch.zeros(1, 3, dtype=ids.dtype), ids], dim=1)
    batch = torch.cat([torch.cat([ids, torch.ones(1, 3, dtype=ids.dtype)], dim=1), padded])
    attention = torch.cat([torch.ones(1, batch.size(1)), torch.cat([torch.zeros(1, 3), torch.ones_like(ids)], 1)])
    attention = attention.long()
    kinds = (batch == video_id).int() * 2
    both = {key: value.repeat(2) for key, value in extra.items()}  # one entry per video
    positions, deltas = model.model.get_rope_index(
        batch, mm_token_type_ids=kinds, video_grid_thw=torch.tensor([grid, grid]), attention_mask=attention, **both
    )
    after = 19 + tokens
    assert positions[:, 0, after : after + 5].tolist() == [list(range(reference, reference + 5))] * 3
    assert torch.equal(positions[:, 1, 3:], positions[:, 0, : ids.size(1)])
    assert deltas[1].item() == reference + 5 - ids.size(1)


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"])
def test_with_torchvision_the_familys_video_processor_makes_the_frame_processors_prompt(family, tmp_path):
    """Where torchvision imports, a folder with a video processor config (as real checkpoints have) loads
    with the family's own processor and video processor, transformers'; elsewhere `FrameVideoProcessor`
    stands in. Both make the same prompt from the same frames: tokens, grid, seconds per frame pair and
    pixels (within float rounding). Run where torchvision imports: `make test-vllm-colocate`."""
    from vlm_grpo.models.families.processors import torchvision_available
    from vlm_grpo.models.loading import load_model_and_processor
    from vlm_grpo.rollout.engines.weights import export_folder

    if not torchvision_available():
        if os.environ.get("VLM_GRPO_REQUIRE_COLOCATE"):
            raise RuntimeError("torchvision does not import here: run it from .venv-vllm (make test-vllm-colocate)")
        pytest.skip("torchvision does not import here: make test-vllm-colocate runs it")
    model, frames = build_tiny(family, size="small")
    folder = export_folder(model, frames, tmp_path / family)
    _, own = load_model_and_processor(str(folder), CPU, torch.float32)
    assert type(own.video_processor).__name__ != "FrameVideoProcessor"
    sample = Sample("v", None, "What moves?", 1, "clips", video=_frames(5))
    theirs = encode_prompts(own, DEFAULT, [sample], CPU).inputs
    ours = encode_prompts(frames, DEFAULT, [sample], CPU).inputs
    assert sorted(theirs) == sorted(ours)
    for key in ("input_ids", "video_grid_thw", "second_per_grid_ts"):
        assert key not in ours or torch.equal(theirs[key], ours[key]), key
    assert (theirs["pixel_values_videos"] - ours["pixel_values_videos"]).abs().max().item() < 1e-6
