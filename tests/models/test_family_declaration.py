"""A model family added from one module, by declaration: LLaVA-NeXT (`llava_next`, which no shipped
family claims) as a `FamilyAdapter` subclass with class attributes only, registered with its tiny
builder. The adapter's defaults then load and build its processor from the declared class, find its
turn end and placeholders, leave it without a video processor, and train it by its `tiny-` name."""

import inspect
import json

import pytest
import torch
from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from support import lab_samples, train_two_steps
from vlm_grpo.models import FamilyAdapter, adapter_for, register_family, registered_models, tiny
from vlm_grpo.models.families import family_named
from vlm_grpo.models.families.llava_onevision import LLAVA_ONEVISION_CHAT_TEMPLATE
from vlm_grpo.rollout import encode_prompts, generate
from vlm_grpo.rollout.engines.weights import export_folder
from vlm_grpo.tasks.styles import R1V

CPU = torch.device("cpu")
TILE, PATCH = 28, 14


class LlavaNextAdapter(FamilyAdapter):
    family = "llava-next"
    model_types = ("llava_next",)
    processor_class = LlavaNextProcessor
    placeholder_keys = ("image_token_index",)
    turn_end_token = "<|im_end|>"


def build_tiny_llava_next(dims: dict, tokenizer, seed: int, image_pixels: int):
    """28 px tiles in 14 px CLIP patches, anyres grids of up to 2 x 2 tiles."""
    tokenizer = tiny.with_special_tokens(tokenizer, {"image_token": "<image>"}, LLAVA_ONEVISION_CHAT_TEMPLATE)
    pinpoints = [[TILE * r, TILE * c] for r in (1, 2) for c in (1, 2)]
    vision = tiny.vision_dims(dims, TILE, PATCH) | {"model_type": "clip_vision_model", "projection_dim": 16}
    strategy = dict(vision_feature_select_strategy="default", vision_feature_layer=-1)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = tiny.text_dims(dims, tokenizer) | {"model_type": "qwen2"}
    layout = dict(image_token_index=image_token, image_grid_pinpoints=pinpoints, **strategy)
    config = LlavaNextConfig(text_config=text, vision_config=vision, **layout)
    ids = tiny.special_ids(tokenizer)
    eos, pad = [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"]
    model = tiny.seeded_model(LlavaNextForConditionalGeneration, config, seed, eos, pad)
    square = {"height": TILE, "width": TILE}
    images = LlavaNextImageProcessorPil(
        size=square, crop_size=square, image_grid_pinpoints=pinpoints, do_center_crop=False
    )
    settings = dict(patch_size=PATCH, vision_feature_select_strategy="default", num_additional_image_tokens=1)
    processor = family_named("llava-next").make_processor(images, tokenizer, LLAVA_ONEVISION_CHAT_TEMPLATE, **settings)
    return model, processor


register_family(LlavaNextAdapter())
tiny.register_tiny_builder("llava-next", build_tiny_llava_next)


def test_the_family_is_declared_not_programmed():
    assert not [name for name, value in vars(LlavaNextAdapter).items() if inspect.isfunction(value)]
    model, processor = tiny.build_tiny("llava-next")
    assert adapter_for(model) is family_named("llava-next") and "tiny-llava-next" in registered_models()
    assert type(processor) is LlavaNextProcessor


def test_declared_tokens_end_the_turn_and_are_never_sampled():
    model, processor = tiny.build_tiny("llava-next")
    adapter, tokenizer = adapter_for(model), processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert adapter.turn_end_id(processor) == im_end == adapter.fallback_turn_end_id(tokenizer)
    assert im_end in adapter.end_token_ids(processor, model)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert adapter.vision_token_ids(model) == [image_id]
    prompts = encode_prompts(processor, R1V, lab_samples(), CPU)
    assert (prompts.inputs["input_ids"] == image_id).sum(1).min() > 0
    completions, mask, _, _ = generate(model, processor, prompts, 2, 6, temperature=1.0)
    assert not (completions == image_id).any() and mask.shape == completions.shape


def test_the_declared_processor_class_saves_and_reloads(tmp_path):
    model, processor = tiny.build_tiny("llava-next")
    folder = export_folder(model, processor, tmp_path / "engine-model")
    config = json.loads((folder / "processor_config.json").read_text())
    assert config["processor_class"] == "LlavaNextProcessor" and "video_processor" not in config
    reloaded = family_named("llava-next").load_processor(str(folder), "llava_next")
    assert type(reloaded) is LlavaNextProcessor and reloaded.chat_template == processor.chat_template
    before = encode_prompts(processor, R1V, lab_samples(), CPU).inputs
    after = encode_prompts(reloaded, R1V, lab_samples(), CPU).inputs
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_the_declared_family_trains_with_demonstrations_ending_its_turn(tmp_path):
    trainer = train_two_steps(tmp_path, "tiny-llava-next", ["injection.mode=random"])
    assert trainer.adapter.family == "llava-next"
    text, tokens = trainer.remedy("injection").injector.demonstration(3)
    assert tokens[-1] == trainer.processor.tokenizer.convert_tokens_to_ids("<|im_end|>") and "3" in text
