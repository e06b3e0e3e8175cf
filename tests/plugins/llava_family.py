"""A model family from outside the package: LLaVA-1.5's layout (`llava`, LlavaForConditionalGeneration:
a CLIP vision tower, an MLP projector, a language model): its adapter, registered with
`register_family`, and its tiny builder, registered with `register_tiny_builder` (then `tiny-llava`
is a model name). It declares its turn end and placeholders; its processor loads through
`AutoProcessor` (no processor class declared) and passes are per row."""

from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from vlm_grpo.models import FamilyAdapter, register_family
from vlm_grpo.models.families.llava_onevision import LLAVA_ONEVISION_CHAT_TEMPLATE
from vlm_grpo.models.tiny import (
    register_tiny_builder,
    seeded_model,
    special_ids,
    text_dims,
    vision_dims,
    with_special_tokens,
)

TILE, PATCH = 28, 14


class LlavaAdapter(FamilyAdapter):
    family = "llava"
    model_types = ("llava",)
    placeholder_keys = ("image_token_index",)
    turn_end_token = "<|im_end|>"


def build_tiny_llava(dims: dict, tokenizer, seed: int, image_pixels: int):
    """28 px images in 14 px CLIP patches: 4 features per image after the class token is dropped."""
    tokenizer = with_special_tokens(tokenizer, {"image_token": "<image>"}, LLAVA_ONEVISION_CHAT_TEMPLATE)
    ids = special_ids(tokenizer)
    text = text_dims(dims, tokenizer) | {"model_type": "qwen2"}
    vision = vision_dims(dims, TILE, PATCH) | {"model_type": "clip_vision_model", "projection_dim": 16}
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    eos, pad = [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"]
    model = seeded_model(LlavaForConditionalGeneration, config, seed, eos, pad)
    image_processor = CLIPImageProcessorPil(
        size={"height": TILE, "width": TILE}, crop_size={"height": TILE, "width": TILE}, do_center_crop=False
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    return model, processor


def register() -> None:
    """What a plug-in's entry point would call."""
    register_family(LlavaAdapter())
    register_tiny_builder("llava", build_tiny_llava)
