"""Tiny Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE: the real vision towers (patch merging,
windowed attention, deepstack) and M-RoPE language models at a few hundred thousand parameters."""

from __future__ import annotations

from collections.abc import Callable

from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ..families import family_named
from . import QWEN_CHAT_TEMPLATE, register_tiny_builder, seeded_model, special_ids, tiny_text_config


def qwen2_vl_vision(dims: dict) -> dict:
    return dict(
        depth=dims["vision_depth"],
        embed_dim=dims["vision_dim"],
        hidden_size=dims["hidden"],
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )


def later_qwen_vision(dims: dict, patch_size: int, depth: int) -> dict:
    """What the Qwen2.5-VL and Qwen3-VL towers share: an MLP twice their width, 2 x 2 patches merged
    into one token of the language model's width."""
    return dict(
        depth=depth,
        hidden_size=dims["vision_dim"],
        intermediate_size=dims["vision_dim"] * 2,
        out_hidden_size=dims["hidden"],
        num_heads=2,
        patch_size=patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )


def qwen2_5_vl_vision(dims: dict) -> dict:
    vision = later_qwen_vision(dims, 14, dims["vision_depth"])
    return {**vision, "window_size": 112, "fullatt_block_indexes": [dims["vision_depth"] - 1]}


def qwen3_vl_vision(dims: dict) -> dict:
    # Deepstack taps an early layer; a second layer keeps its features apart from the last one's.
    vision = later_qwen_vision(dims, 16, max(dims["vision_depth"], 2))
    # An 8 x 8 learned position grid, interpolated to each image's grid.
    return {**vision, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]}


def qwen3_vl_text(dims: dict, tokenizer) -> dict:
    text = tiny_text_config(dims, tokenizer)
    text["head_dim"] = dims["hidden"] // dims["heads"]  # Qwen3-VL's default is 128
    text["rope_parameters"]["mrope_interleaved"] = True  # as Qwen3-VL checkpoints declare it
    return text


def qwen3_vl_moe_text(dims: dict, tokenizer) -> dict:
    text = qwen3_vl_text(dims, tokenizer)
    # Every layer sparse, as in Qwen3-VL-30B-A3B (128 experts, 8 per token), at tiny scale.
    text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=dims["ffn"] // 4, decoder_sparse_step=1)
    return text


def qwen2_vl_images(image_pixels: int):
    return Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=image_pixels)


def qwen3_vl_images(image_pixels: int):
    return Qwen2VLImageProcessorPil(
        min_pixels=32 * 32, max_pixels=image_pixels, patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def qwen_builder(family: str, config_class, model_class, vision: Callable, text: Callable, images: Callable):
    """The builder of one Qwen-VL family: its config and model classes and its tiny parts."""

    def build(dims: dict, tokenizer, seed: int, image_pixels: int):
        ids = special_ids(tokenizer)
        special = dict(
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        config = config_class(text_config=text(dims, tokenizer), vision_config=vision(dims), **special)
        eos, pad = [ids["<|im_end|>"], ids["<|endoftext|>"]], ids["<|endoftext|>"]
        model = seeded_model(model_class, config, seed, eos, pad)
        adapter = family_named(family)  # the family's own processor choice (image-only without torchvision)
        return model, adapter.make_processor(images(image_pixels), tokenizer, QWEN_CHAT_TEMPLATE)

    return build


QWEN2_VL = (Qwen2VLConfig, Qwen2VLForConditionalGeneration)
QWEN2_5_VL = (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)
QWEN3_VL = (Qwen3VLConfig, Qwen3VLForConditionalGeneration)
QWEN3_VL_MOE = (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration)
register_tiny_builder(
    "qwen2-vl", qwen_builder("qwen2-vl", *QWEN2_VL, qwen2_vl_vision, tiny_text_config, qwen2_vl_images)
)
register_tiny_builder(
    "qwen2.5-vl", qwen_builder("qwen2.5-vl", *QWEN2_5_VL, qwen2_5_vl_vision, tiny_text_config, qwen2_vl_images)
)
register_tiny_builder("qwen3-vl", qwen_builder("qwen3-vl", *QWEN3_VL, qwen3_vl_vision, qwen3_vl_text, qwen3_vl_images))
register_tiny_builder(
    "qwen3-vl-moe", qwen_builder("qwen3-vl-moe", *QWEN3_VL_MOE, qwen3_vl_vision, qwen3_vl_moe_text, qwen3_vl_images)
)
