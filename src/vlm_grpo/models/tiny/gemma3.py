"""Tiny Gemma 3: a SigLIP tower with pooled soft tokens, sliding and global attention layers."""

from __future__ import annotations

from ..families.gemma3 import GEMMA3_CHAT_TEMPLATE, SPECIAL_TOKENS, Gemma3Adapter
from . import register_tiny_builder


def build(dims: dict, tokenizer, seed: int, image_pixels: int):
    """Gemma 3's layout at tiny scale: 56 px images in 14 px patches (a 4 x 4 grid) pooled 2 x 2
    to 4 soft tokens (gemma-3-4b: 896 px, 64 x 64 patches pooled to 256 tokens), one sliding
    and one global attention layer (the checkpoints interleave five sliding layers per global
    one). `image_pixels` does not apply: Gemma 3 resizes every image to its fixed square."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    from . import seeded_model, text_dims, vision_dims, with_special_tokens

    tokenizer = with_special_tokens(tokenizer, SPECIAL_TOKENS, GEMMA3_CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    image_size, patch, tokens = 56, 14, 4
    text = dict(
        **text_dims(dims, tokenizer),
        head_dim=dims["hidden"] // dims["heads"],
        query_pre_attn_scalar=dims["hidden"] // dims["heads"],
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"] * (dims["layers"] // 2)
        + ["sliding_attention"] * (dims["layers"] % 2),
        bos_token_id=ids("<bos>"),
        eos_token_id=ids("<end_of_turn>"),
        pad_token_id=ids("<pad>"),
    )
    vision = vision_dims(dims, image_size, patch) | {"vision_use_head": False}
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    model = seeded_model(Gemma3ForConditionalGeneration, config, seed, [ids("<end_of_turn>")], ids("<pad>"))
    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor = Gemma3Adapter.processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=tokens,
    )
    return model, processor


register_tiny_builder("gemma3", build)
