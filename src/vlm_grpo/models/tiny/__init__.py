"""Tiny real-architecture models built locally, offline, in well under a second.

They are the real architectures (M-RoPE, the patch-merging vision tower, the chat template)
at a few hundred thousand parameters, with a byte-level BPE tokenizer trained on the spot.
Tests, the smoke preset and the counting lab use them; nothing here touches the network.

The shared parts live here (the tokenizer, the sizes, seeded construction); each family's builder
is one module beside this one (`qwen.py`, `gemma3.py`, `smolvlm.py`, `llava_onevision.py`),
registered in TINY_BUILDERS under the family's name. A family with a builder is `tiny-<family>`
to every command (`models.loading.model_factory`); a plug-in family registers its own with
`register_tiny_builder`. The production adapters in `models/families/` hold no tiny code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ...registry import Registry

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The Qwen2-VL chat format (system default, image and video placeholders, assistant header).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_SIZES = {
    # text hidden, layers, heads, kv heads, ffn, vision embed, vision depth
    "nano": dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, vision_dim=32, vision_depth=1),
    "small": dict(hidden=128, layers=2, heads=4, kv_heads=2, ffn=384, vision_dim=64, vision_depth=2),
}


# The tokenizer's training text is frozen here, not read from the tasks: every tiny model (and every
# lab base pre-trained on top of one) keeps its vocabulary when a task's prompt wording changes.
CORPUS_PROMPTS = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively.",
    "Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags.",
    "You are a helpful assistant.",
    "How many items are there in the image?",
    "How many objects are in this picture?",
    "Count the objects in the image. How many are there?",
    "What is the number of things shown?",
)
# zero to twelve, the counts the tokenizer was first trained on
CORPUS_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()  # noqa: SIM905


def default_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: the prompts, questions and answers of counting tasks."""
    shapes = ["cube", "cubes", "sphere", "spheres", "cylinder", "cylinders", "object", "objects", "items", "things"]
    colours = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]
    lines = list(CORPUS_PROMPTS)
    for i, word in enumerate(CORPUS_NUMBERS):
        lines.append(
            f"There are {word} {shapes[i % len(shapes)]} in the image, {colours[i % 8]} and {colours[(i + 3) % 8]}."
        )
        lines.append(f"<think>I count {word} objects in the image.</think><answer>{i}</answer>")
        lines.append(f"In total I can see {word} {colours[i % 8]} {shapes[(i + 5) % len(shapes)]} on the floor.")
    return lines * 4


def build_tokenizer(
    corpus: Iterable[str] | None = None, vocab_size: int = 560, extra_special_tokens: dict[str, str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE with digits split one per token (as Qwen2 does) and Qwen's special tokens;
    `extra_special_tokens` (see `with_special_tokens`) adds another family's after them."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus if corpus is not None else default_corpus()), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN_CHAT_TEMPLATE
    return with_special_tokens(fast, extra_special_tokens) if extra_special_tokens else fast


def with_special_tokens(
    tokenizer: PreTrainedTokenizerFast, tokens: dict[str, str], chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    """A copy of `tokenizer` with more special tokens, appended after its vocabulary in the order
    given, so that every existing id stays put. `tokens` maps attribute names to tokens: the standard
    ones (eos_token, pad_token, bos_token) replace the tokenizer's, others become named extras that
    processors read (Gemma 3's `boi_token`); names starting with `extra_` only add the token
    (SmolVLM's `<row_1_col_1>` tags, which its processor writes as plain text)."""
    standard = {k: v for k, v in tokens.items() if k in ("eos_token", "pad_token", "bos_token", "unk_token")}
    named = {k: v for k, v in tokens.items() if k not in standard and not k.startswith("extra_")}
    plain = [v for k, v in tokens.items() if k.startswith("extra_")]
    # A fresh backend: the copy's added tokens must not leak into the tokenizer it was made from.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    # New tokens take ids in the order `tokens` lists them (families whose placeholders form one block).
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(tokens.values())])
    kept = {"eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token, "bos_token": tokenizer.bos_token}
    copy = PreTrainedTokenizerFast(tokenizer_object=backend, **(kept | standard), extra_special_tokens=named)
    if plain:
        copy.add_special_tokens({"additional_special_tokens": plain})
    copy.chat_template = chat_template if chat_template is not None else tokenizer.chat_template
    return copy


def special_ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def text_dims(dims: dict, tokenizer) -> dict:
    """A language model's sizes at tiny scale (`TINY_SIZES`), under the names every family's config uses."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=dims["hidden"],
        intermediate_size=dims["ffn"],
        num_hidden_layers=dims["layers"],
        num_attention_heads=dims["heads"],
        num_key_value_heads=dims["kv_heads"],
        max_position_embeddings=4096,
    )


def vision_dims(dims: dict, image_size: int, patch_size: int) -> dict:
    """A ViT-style vision tower's sizes at tiny scale (SigLIP and Idefics3 names)."""
    return dict(
        hidden_size=dims["vision_dim"],
        intermediate_size=dims["vision_dim"] * 2,
        num_hidden_layers=dims["vision_depth"],
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )


def seeded_model(model_class, config, seed: int, eos: list[int], pad: int):
    """`model_class(config)` initialised from `seed` (the global RNG is left as it was), generating
    until any id in `eos` and padding with `pad`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    return model


def tiny_text_config(dims: dict, tokenizer) -> dict:
    """The language model's configuration at tiny scale, with Qwen's special ids."""
    ids = special_ids(tokenizer)
    head_dim = dims["hidden"] // dims["heads"]
    # M-RoPE splits the rotary half-dimension into temporal / height / width sections.
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    return dict(
        **text_dims(dims, tokenizer),
        rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )


TinyBuilder = Callable[[dict, PreTrainedTokenizerFast, int, int], tuple]
"""(sizes, tokenizer, seed, image pixel budget) -> (a randomly initialised model, its processor)."""

TINY_BUILDERS: Registry[TinyBuilder] = Registry("tiny builder")


def register_tiny_builder(family: str, builder: TinyBuilder) -> None:
    TINY_BUILDERS.register(family, builder)


def build_tiny(
    family: str = "qwen2-vl",
    size: str = "nano",
    seed: int = 0,
    tokenizer: PreTrainedTokenizerFast | None = None,
    image_pixels: int = 112 * 112,
):
    """A randomly initialised tiny model of `family` and its processor; `image_pixels` caps the image budget."""
    if size not in TINY_SIZES:
        raise ValueError(f"unknown tiny size {size!r}; choose {', '.join(TINY_SIZES)}")
    if family not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; choose {', '.join(TINY_BUILDERS.names())}")
    return TINY_BUILDERS.get(family)(TINY_SIZES[size], tokenizer or build_tokenizer(), seed, image_pixels)


def save_tiny(path: str | Path, **kwargs) -> Path:
    """Build a tiny model and save model + processor as a standard HF folder."""
    model, processor = build_tiny(**kwargs)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# The shipped families' builders register themselves (after the shared parts above exist).
from . import gemma3, llava_onevision, qwen, smolvlm  # noqa: E402, F401
