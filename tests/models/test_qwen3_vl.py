"""Qwen3-VL (and Qwen3-VL-MoE) train as Qwen2-VL does: tiny real-architecture models, the
image-only processor without torchvision, placeholder suppression, turn ends and `vlm-grpo train`.

The shared-prefix and shared-feature log-prob and gradient checks, and greedy prefix sampling
against transformers' generate, run for these families in tests/rollout/test_logprob_sharing.py."""

import json

import pytest
import torch

from support import lab_samples, train_two_steps
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models import load_model_and_processor, registered_models
from vlm_grpo.models.families import adapter_for, family_named
from vlm_grpo.models.families.qwen3_vl import ImageOnlyQwen3VLProcessor
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
from vlm_grpo.tasks.styles import DEFAULT, R1V

CPU = torch.device("cpu")
FAMILIES = ["qwen3-vl", "qwen3-vl-moe"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_is_the_qwen3_vl_architecture(family):
    model, processor = build_tiny(family)
    assert adapter_for(model) is family_named(family)
    vision, text = model.config.vision_config, model.config.text_config
    assert vision.patch_size == 16 and vision.deepstack_visual_indexes == [0] and vision.depth == 2
    assert (
        text.rope_parameters["mrope_interleaved"] and sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    )
    assert sum(p.numel() for p in model.parameters()) < 400_000
    prompts = encode_prompts(processor, R1V, lab_samples(), CPU)
    # 112 px does not divide into 32 px merged patches: the processor resizes to 96 px, 6 x 6 patches.
    assert prompts.inputs["image_grid_thw"].tolist() == [[1, 6, 6], [1, 6, 6]]
    assert "mm_token_type_ids" in prompts.inputs


def test_vision_placeholders_are_never_sampled():
    model, processor = build_tiny("qwen3-vl")
    ids = processor.tokenizer.convert_tokens_to_ids
    placeholders = sorted(ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"))
    assert adapter_for(model).vision_token_ids(model) == placeholders
    # Make the placeholders by far the likeliest tokens: sampling must still never pick them.
    forbidden = torch.tensor(placeholders)
    plain = model.lm_head.forward  # the head's own function, as generation and the log-prob passes call it
    model.lm_head.forward = lambda hidden: plain(hidden).index_add(
        -1, forbidden, torch.full((*hidden.shape[:-1], 4), 50.0)
    )
    prompts = encode_prompts(processor, DEFAULT, lab_samples(), CPU)
    for sharing in ("prefix", "none"):
        completions, mask, _, _ = generate(model, processor, prompts, 3, 8, temperature=1.0, sharing=sharing)
        assert not torch.isin(completions, forbidden).any(), sharing
        logp = completion_logprobs(model, prompts, torch.arange(6), completions, mask, 3, 1.0, "prefix")
        assert torch.isfinite(logp[mask.bool()]).all()


def test_turn_end_is_im_end():
    model, processor = build_tiny("qwen3-vl")
    adapter = adapter_for(model)
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert adapter.turn_end_id(processor) == im_end
    assert im_end in adapter.end_token_ids(processor, model)


def test_image_only_processor_saves_and_reloads(tmp_path):
    model, processor = build_tiny("qwen3-vl")
    assert isinstance(processor, ImageOnlyQwen3VLProcessor)  # no torchvision here: no standard processor
    processor.save_pretrained(tmp_path)
    reloaded = family_named("qwen3-vl").load_processor(str(tmp_path), "qwen3_vl")
    assert reloaded.image_processor.patch_size == 16 and reloaded.chat_template == processor.chat_template
    before = encode_prompts(processor, R1V, lab_samples(), CPU).inputs
    after = encode_prompts(reloaded, R1V, lab_samples(), CPU).inputs
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_folders_saved_by_the_standard_processor_load(tmp_path):
    """The two layouts the standard Qwen3VLProcessor writes: one processor_config.json naming its
    video processor too, and (as published checkpoints have it) separate preprocessor files."""
    _, processor = build_tiny("qwen3-vl")
    processor.save_pretrained(tmp_path / "joint")
    config_file = tmp_path / "joint" / "processor_config.json"
    config = json.loads(config_file.read_text())
    video = {"video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 16, "merge_size": 2, "fps": 2}
    config.update(processor_class="Qwen3VLProcessor", video_processor=video)
    config_file.write_text(json.dumps(config))

    split = tmp_path / "split"
    processor.save_pretrained(split)
    image_config = json.loads((split / "processor_config.json").read_text())["image_processor"]
    (split / "processor_config.json").unlink()
    (split / "preprocessor_config.json").write_text(json.dumps(image_config | {"processor_class": "Qwen3VLProcessor"}))
    (split / "video_preprocessor_config.json").write_text(json.dumps(video | {"processor_class": "Qwen3VLProcessor"}))

    expected = encode_prompts(processor, R1V, lab_samples(), CPU).inputs
    for folder in ("joint", "split"):
        loaded = family_named("qwen3-vl").load_processor(str(tmp_path / folder), "qwen3_vl")
        got = encode_prompts(loaded, R1V, lab_samples(), CPU).inputs
        assert all(torch.equal(expected[k], got[k]) for k in expected), folder


def test_images_fitted_once_give_the_same_pixels():
    _, processor = build_tiny("qwen3-vl", image_pixels=224 * 224)
    image, _ = render_scene("lab-clevr", 4, size=300)
    image = image.resize((331, 257))  # not a multiple of 32, over the budget
    adapter = family_named("qwen3-vl")
    fitted = adapter.fit_image(image, processor)
    assert fitted.size != image.size and fitted.width % 32 == 0 and fitted.height % 32 == 0
    assert adapter.fit_image(fitted, processor) is fitted
    direct = processor.image_processor(images=[image], return_tensors="pt")
    once = processor.image_processor(images=[fitted], return_tensors="pt")
    assert torch.equal(direct["image_grid_thw"], once["image_grid_thw"])
    assert torch.allclose(direct["pixel_values"], once["pixel_values"], atol=1e-5)


def test_tiny_names_are_registered():
    from typer.testing import CliRunner

    from vlm_grpo.cli import app

    listed = CliRunner().invoke(app, ["models"]).output.split()
    for family in FAMILIES:
        assert f"tiny-{family}" in registered_models() and f"tiny-{family}" in listed


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_trains(tmp_path, family):
    model, processor = build_tiny(family)
    folder = tmp_path / f"tiny-{family}"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)  # image processor, tokenizer, chat template; no video processor
    loaded, _ = load_model_and_processor(str(folder), CPU, torch.float32)
    assert loaded.config.model_type == family.replace("-", "_")
    train_two_steps(tmp_path, str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_name_trains_with_demonstrations_ending_the_turn(tmp_path, family):
    trainer = train_two_steps(tmp_path, f"tiny-{family}", ["injection.mode=random", "logprob_sharing=vision"])
    im_end = trainer.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    text, tokens = trainer.remedy("injection").injector.demonstration(3)
    assert tokens[-1] == im_end and "<|im_end|>" not in text
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["injection/rate"] > 0
