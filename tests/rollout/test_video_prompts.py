"""Video prompts through every log-prob path and sampling: a video alone, an image alone, and a video
beside an image in one batch, on tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL. Shared-prefix and
shared-feature passes give the per-row pass's log-probs and gradients (the image tests' tolerances), on
sampled completions and on literal token sequences; prefix sampling is transformers' generate."""

import pytest
import torch
from PIL import Image

from support import logprobs_and_grads, write_video
from vlm_grpo.data import Sample
from vlm_grpo.data.videos import VideoConfig
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models.families import adapter_for
from vlm_grpo.models.families.frames import apply_video_settings
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
from vlm_grpo.tasks.styles import DEFAULT

G = 2
FAMILIES = ["qwen2-vl", "qwen2.5-vl", "qwen3-vl"]
# Each family as transformers places the text after a video, and the two whose M-RoPE the Qwen reference's
# rule changes (`video.positions=reference`).
CASES = [(family, "transformers") for family in FAMILIES] + [("qwen2-vl", "reference"), ("qwen2.5-vl", "reference")]


def frames(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (60, 44), (30 * i, 80 + 10 * i, 120)) for i in range(count)]


def prompts_of(family, tmp_path, positions="transformers"):
    """Video only (a file), image only, video (a list of frames) and image; questions of different lengths.
    One frame a second: a frame pair spans 2 s, so Qwen2.5-VL's temporal positions step by 2 (the default
    of 2 fps would make them the same as without `second_per_grid_ts`)."""
    torch.manual_seed(0)
    model, processor = build_tiny(family)
    apply_video_settings(processor, VideoConfig(fps=1.0))
    clip = write_video(tmp_path / "clip.mp4", frames=8, fps=4)
    image = render_scene("lab-clevr", 0)[0]
    samples = [
        Sample("0", None, "What moves in the video?", 1, "clips", video=str(clip)),
        Sample("1", image, "How many objects?" + " Count carefully." * 2, 3, "clips"),
        Sample("2", image, "And now?" + " Count carefully.", 2, "clips", video=frames(5)),
    ]
    prompts = encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))
    if positions == "reference":
        inputs, inner = prompts.inputs, model.model
        given = {k: inputs.get(k) for k in ("mm_token_type_ids", "image_grid_thw", "video_grid_thw", "attention_mask")}
        extra = {"second_per_grid_ts": inputs["second_per_grid_ts"]} if "second_per_grid_ts" in inputs else {}
        before = inner.get_rope_index(inputs["input_ids"], **given, **extra)[0]
        adapter_for(model).use_video_positions(model, "reference")
        after = inner.get_rope_index(inputs["input_ids"], **given, **extra)[0]
        assert not torch.equal(before, after)  # these prompts place the text after their videos differently
    return model, processor, prompts


def assert_shared_equal_per_row(logps, grads, mask):
    on = mask.bool()
    for sharing in ("prefix", "vision"):
        assert (logps[sharing] - logps["none"])[on].abs().max().item() < 1e-5, sharing
        assert grads["none"].keys() == grads[sharing].keys()
        for name, reference in grads["none"].items():
            scale = reference.abs().max().clamp(min=1e-6)
            assert (grads[sharing][name] - reference).abs().max() / scale < 1e-4, (sharing, name)


@pytest.mark.parametrize("family, positions", CASES)
def test_every_logprob_path_is_exact_with_videos(family, positions, tmp_path):
    model, processor, prompts = prompts_of(family, tmp_path, positions)
    assert prompts.video_counts == [1, 0, 1] and prompts.image_counts == [0, 1, 1]
    assert (prompts.inputs["attention_mask"] == 0).any()  # left padding is exercised
    ids, mask, _, _ = generate(model, processor, prompts, G, 8, temperature=1.0)
    mask[1, 3:] = 0  # an early stop
    model.train()
    logps, grads = logprobs_and_grads(model, prompts, ids, mask, G)
    assert_shared_equal_per_row(logps, grads, mask)
    subset = torch.tensor([5, 0, 3])  # rows of the video-and-image prompt first, out of order
    shared = completion_logprobs(model, prompts, subset, ids[subset], mask[subset], G, 1.0, "prefix")
    assert (shared - logps["none"][subset])[mask[subset].bool()].abs().max().item() < 1e-5


@pytest.mark.parametrize("family, positions", CASES)
def test_prefix_sharing_is_exact_on_literal_token_sequences(family, positions, tmp_path):
    model, processor, prompts = prompts_of(family, tmp_path, positions)
    tokenizer = processor.tokenizer
    texts = ["<answer>3</answer>", "two cubes", "I count seven objects", "<think>one</think><answer>1</answer>"]
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(len(r) for r in rows) + 1
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = torch.full((2 * G, width), tokenizer.pad_token_id)
    mask = torch.zeros((2 * G, width))
    for i, row in enumerate(rows):
        ids[i, : len(row) + 1] = torch.tensor(row + [end])
        mask[i, : len(row) + 1] = 1
    # Rows 0-1 answer the video prompt, rows 2-3 the video-and-image prompt.
    subset = torch.tensor([0, 1, 4, 5])
    model.train()
    per_row = completion_logprobs(model, prompts, subset, ids, mask, G, 1.0, "none")
    for sharing in ("prefix", "vision"):
        shared = completion_logprobs(model, prompts, subset, ids, mask, G, 1.0, sharing)
        assert (shared - per_row)[mask.bool()].abs().max().item() < 1e-5, sharing
    assert (per_row[mask.bool()] < 0).all()


@pytest.mark.parametrize("family, positions", CASES)
def test_prefix_sampling_with_videos_equals_transformers_generate(family, positions, tmp_path):
    model, processor, prompts = prompts_of(family, tmp_path, positions)
    ours = generate(model, processor, prompts, 1, 10, temperature=None, sharing="prefix")
    theirs = generate(model, processor, prompts, 1, 10, temperature=None, sharing="none")
    width = min(ours[0].size(1), theirs[0].size(1))
    assert torch.equal((ours[0] * ours[1].long())[:, :width], (theirs[0] * theirs[1].long())[:, :width])
    assert ours[3] == theirs[3]


def test_selecting_prompts_takes_exactly_their_videos(tmp_path):
    _, processor, prompts = prompts_of("qwen2-vl", tmp_path)
    alone = encode_prompts(processor, DEFAULT, [prompts.samples[2], prompts.samples[0]], torch.device("cpu"))
    picked = prompts.subset([2, 0])
    assert picked.video_counts == [1, 1] and picked.image_counts == [1, 0]
    for key in ("pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw"):
        assert torch.equal(picked.inputs[key], alone.inputs[key]), key
    image_only = prompts.select(torch.tensor([1, 1]))
    assert "pixel_values_videos" not in image_only and image_only["image_grid_thw"].size(0) == 2
    video_only = prompts.select(torch.tensor([0]))
    assert "pixel_values" not in video_only and video_only["video_grid_thw"].size(0) == 1
