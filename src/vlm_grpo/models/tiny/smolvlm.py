"""Tiny SmolVLM: tiles in patches, pixel-shuffled, with the row/column tags of its processor."""

from __future__ import annotations

from ..families.smolvlm import SMOLVLM_CHAT_TEMPLATE, SPECIAL_TOKENS, SmolVLMAdapter
from . import register_tiny_builder


def build(dims: dict, tokenizer, seed: int, image_pixels: int):
    """SmolVLM's layout at tiny scale: 32 px tiles in 8 px patches (4 x 4), pixel-shuffled by 2
    to 4 tokens per tile (SmolVLM-256M: 512 px tiles, 16 px patches, shuffle 4, 64 tokens);
    images are resized to a longest edge of 64 px and split into up to 2 x 2 tiles plus the
    global image. `image_pixels` does not apply: the tile grid is fixed by the longest edge."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    from . import seeded_model, text_dims, vision_dims, with_special_tokens

    tokenizer = with_special_tokens(tokenizer, SPECIAL_TOKENS, SMOLVLM_CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    tile, patch, shuffle = 32, 8, 2
    text = dict(
        **text_dims(dims, tokenizer),
        bos_token_id=ids("<|im_start|>"),
        eos_token_id=ids("<end_of_utterance>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    vision = vision_dims(dims, tile, patch)
    config = SmolVLMConfig(
        text_config=text,
        vision_config=vision,
        scale_factor=shuffle,
        image_token_id=ids("<image>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    eos, pad = [ids("<end_of_utterance>")], ids("<|endoftext|>")
    model = seeded_model(SmolVLMForConditionalGeneration, config, seed, eos, pad)
    image_processor = SmolVLMImageProcessorPil(
        size={"longest_edge": 2 * tile},
        max_image_size={"longest_edge": tile},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    tokens = (tile // patch) ** 2 // shuffle**2
    processor = SmolVLMAdapter.processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=tokens,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    return model, processor


register_tiny_builder("smolvlm", build)
