"""Tiny LLaVA-OneVision: a SigLIP tower, anyres tiles on pinpoint grids, a Qwen2 language model."""

from __future__ import annotations

from ..families.llava_onevision import LLAVA_ONEVISION_CHAT_TEMPLATE, SPECIAL_TOKENS, LlavaOnevisionAdapter
from . import register_tiny_builder


def build(dims: dict, tokenizer, seed: int, image_pixels: int):
    """LLaVA-OneVision's layout at tiny scale: 28 px tiles in 14 px patches (2 x 2 features per
    tile; the checkpoints: 384 px, 27 x 27), anyres grids of up to 2 x 2 tiles (theirs: up to
    6 x 6), all patch features kept (`full`) from the last vision layer. `image_pixels` does
    not apply: the pinpoint grids fix the resolution."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    from . import seeded_model, special_ids, tiny_text_config, vision_dims, with_special_tokens

    tokenizer = with_special_tokens(tokenizer, SPECIAL_TOKENS, LLAVA_ONEVISION_CHAT_TEMPLATE)
    ids = special_ids(tokenizer)
    tile = 28
    text = tiny_text_config(dims, tokenizer) | {"model_type": "qwen2", "rope_parameters": None}
    vision = vision_dims(dims, tile, 14) | {"model_type": "siglip_vision_model", "vision_use_head": False}
    pinpoints = [[tile * r, tile * c] for r in (1, 2) for c in (1, 2)]
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    eos, pad = [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"]
    model = seeded_model(LlavaOnevisionForConditionalGeneration, config, seed, eos, pad)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    processor = LlavaOnevisionAdapter.processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        num_image_tokens=(tile // 14) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )
    return model, processor


register_tiny_builder("llava-onevision", build)
