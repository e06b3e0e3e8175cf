"""Prompts in, G completions per prompt out, and per-token log-probs of those completions.

Rows are prompt-major: row n belongs to prompt n // G. Every row records whether its tokens
were sampled from the policy or injected as a demonstration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .data import Sample
from .prompts import PromptStyle
from .rewards import Score
from . import prefix
from .algo import token_logprobs


@dataclass
class PromptBatch:
    """B prompts, encoded once; left-padded so that generation continues from the right edge."""

    samples: list[Sample]
    inputs: dict[str, torch.Tensor]
    """input_ids, attention_mask, mm_token_type_ids: (B, P); pixel_values: (patches, D); image_grid_thw: (B, 3)."""

    @property
    def size(self) -> int:
        return len(self.samples)


@dataclass
class Rollout:
    """N = B*G completions of one step, with where each came from and what it scored."""

    prompts: PromptBatch
    group_size: int
    completion_ids: torch.Tensor
    """(N, C) token ids, right-padded."""
    completion_mask: torch.Tensor
    """(N, C) 1 up to and including the end-of-turn token."""
    truncated: torch.Tensor
    """(N,) bool: hit max_completion_length without an end token."""
    texts: list[str]
    scores: list[Score]
    injected: torch.Tensor = field(default=None)  # type: ignore[assignment]
    """(N,) bool: the row is a ground-truth demonstration, not a policy sample."""

    def __post_init__(self) -> None:
        if self.injected is None:
            self.injected = torch.zeros(len(self.texts), dtype=torch.bool)

    @property
    def rewards(self) -> torch.Tensor:  # (N,)
        return torch.tensor([s.reward for s in self.scores], dtype=torch.float32)

    def answer_of_row(self, row: int) -> int:
        return self.prompts.samples[row // self.group_size].answer


def encode_prompts(processor, style: PromptStyle, samples: list[Sample], device: torch.device) -> PromptBatch:
    texts = [processor.apply_chat_template(style.messages(s.question), add_generation_prompt=True, tokenize=False)
             for s in samples]
    images = [s.load_image() for s in samples]
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="left")
    return PromptBatch(samples, {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)})


def turn_end_id(processor) -> int:
    """The token the chat template writes right after an assistant message (<|im_end|> for Qwen).

    Demonstrations must end with this token, not just any EOS id: Qwen's generation config also
    lists <|endoftext|>, which the model never emits after an answer, so a demonstration ending
    with it would teach a near-impossible token instead of how to stop.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    marker = "vlm-grpo-turn-end-probe"
    messages = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [{"type": "text", "text": marker}]}]
    try:
        rendered = processor.apply_chat_template(messages, tokenize=False)
    except (ValueError, TypeError, AttributeError):
        rendered = None
    if isinstance(rendered, str) and marker in rendered:
        after = rendered[rendered.rindex(marker) + len(marker):]
        tokens = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        if tokens and tokens[0] in tokenizer.all_special_ids:
            return tokens[0]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        return im_end
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer defines no end-of-turn token; set its eos_token")
    return tokenizer.eos_token_id


def end_token_ids(processor, model) -> list[int]:
    """Tokens that end an assistant turn: <|im_end|> and the model's own EOS ids."""
    ids = set()
    eos = model.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != processor.tokenizer.unk_token_id:
        ids.add(im_end)
    if not ids:
        raise ValueError("the model defines no end-of-turn token; set generation_config.eos_token_id")
    return sorted(ids)


def vision_token_ids(model) -> list[int]:
    """Placeholder tokens of images and videos: a completion must never contain them, or the
    next forward pass would count one more image slot than there are image features."""
    config = model.config
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return sorted({getattr(config, n) for n in names if isinstance(getattr(config, n, None), int)})


def mask_after_end(ids: torch.Tensor, end_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, truncated): mask is 1 up to and including the first end token of each row."""
    is_end = torch.isin(ids, torch.tensor(end_ids, device=ids.device))
    has_end = is_end.any(dim=1)
    first_end = torch.where(has_end, is_end.int().argmax(dim=1), torch.full_like(has_end, ids.size(1), dtype=torch.long))
    positions = torch.arange(ids.size(1), device=ids.device).unsqueeze(0)
    mask = (positions <= first_end.unsqueeze(1)).float()
    return mask, ~has_end


@torch.no_grad()
def generate(
    model,
    processor,
    prompts: PromptBatch,
    group_size: int,
    max_new_tokens: int,
    temperature: float | None,
    top_p: float = 1.0,
    top_k: int = 0,
    sharing: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """G completions per prompt (temperature None: greedy); returns ids, mask, truncated, texts.

    sharing="prefix" prefills each prompt once and samples its G rows from the repeated cache
    (Qwen2-VL family); "none" uses transformers' generate, which prefills every row; "auto" picks
    prefix where the model family supports it.
    """
    if sharing == "auto":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        sharing = "prefix" if base.config.model_type in prefix.FAMILIES else "none"
    end_ids = end_token_ids(processor, model)
    pad_id = processor.tokenizer.pad_token_id
    sampling = temperature is not None
    # Every knob is explicit: a checkpoint's generation_config (Qwen2-VL-Instruct ships top_k=1,
    # repetition_penalty=1.05) must not change the distribution GRPO's ratios assume.
    options = dict(do_sample=sampling, max_new_tokens=max_new_tokens, num_return_sequences=group_size,
                   eos_token_id=end_ids, pad_token_id=pad_id, repetition_penalty=1.0, use_cache=True,
                   suppress_tokens=vision_token_ids(model))
    if sampling:
        options.update(temperature=temperature, top_p=top_p, top_k=top_k)
    was_training = model.training
    model.eval()
    try:
        if sharing == "prefix":
            ids = prefix.sample(model, prompts.inputs, group_size, max_new_tokens, temperature, top_p, top_k,
                                end_ids, pad_id, vision_token_ids(model))
        elif sharing == "none":
            ids = model.generate(**prompts.inputs, **options)[:, prompts.inputs["input_ids"].size(1):]
        else:
            raise ValueError(f"unknown generation_sharing {sharing!r}: use prefix or none")
    finally:
        model.train(was_training)
    mask, truncated = mask_after_end(ids, end_ids)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return ids, mask, truncated, texts


def prompt_inputs(prompts: PromptBatch, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Prompt inputs for the prompts at `index` (repeats allowed), images included."""
    index = index.to(prompts.inputs["input_ids"].device)
    out = {k: v[index] for k, v in prompts.inputs.items() if k not in ("pixel_values", "image_grid_thw")}
    if "pixel_values" in prompts.inputs:
        grid = prompts.inputs["image_grid_thw"]
        chunks = torch.split(prompts.inputs["pixel_values"], grid.prod(-1).tolist())
        out["pixel_values"] = torch.cat([chunks[i] for i in index.tolist()])
        out["image_grid_thw"] = grid[index]
    return out


def completion_logprobs(
    model,
    prompts: PromptBatch,
    rows: torch.Tensor,  # (n,) row indices into the rollout
    completion_ids: torch.Tensor,  # (n, C)
    completion_mask: torch.Tensor,  # (n, C)
    group_size: int,
    temperature: float = 1.0,
    sharing: str = "prefix",
) -> torch.Tensor:  # (n, C)
    """Per-token log-probs of completion rows, completion logits only.

    sharing="prefix": each distinct prompt (image included) is encoded once, its KV cache is
    repeated for its rows, and only completion tokens run again; exact (same log-probs as the
    per-row pass within float rounding) because attention over the cached prefix is the same
    computation. sharing="none": one forward over prompt + completion per row.
    """
    if sharing == "prefix":
        logits = _shared_prefix_logits(model, prompts, rows // group_size, completion_ids, completion_mask)
    elif sharing == "vision":
        logits = _per_row_logits(model, prompts, rows // group_size, completion_ids, completion_mask, share_vision=True)
    elif sharing == "none":
        logits = _per_row_logits(model, prompts, rows // group_size, completion_ids, completion_mask)
    else:
        raise ValueError(f"unknown logprob_sharing {sharing!r}: use prefix, vision or none")
    # The same suppression as in generation, so these are the log-probs of the sampling distribution.
    logits = logits.index_fill(-1, torch.tensor(vision_token_ids(model), device=logits.device), float("-inf"))
    return token_logprobs(logits, completion_ids, temperature)


def _per_row_logits(model, prompts, owner, completion_ids, completion_mask, share_vision=False) -> torch.Tensor:
    """(n, C, V) logits from whole rows; with share_vision, each distinct image is encoded once and its
    features are reused by its rows (works with activation checkpointing, which turns the cache off)."""
    inputs = prompt_inputs(prompts, owner)
    if share_vision and "pixel_values" in inputs:
        inputs = _with_shared_image_features(model, prompts, owner, inputs)
    width = completion_ids.size(1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], completion_mask.to(inputs["attention_mask"].dtype)], dim=1)
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(completion_ids, dtype=inputs["mm_token_type_ids"].dtype)], dim=1)
    return model(**inputs, use_cache=False, logits_to_keep=width + 1).logits[:, :-1]


def _with_shared_image_features(model, prompts, owner, inputs) -> dict:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    base = prefix.base_model(model)
    distinct, local = torch.unique(owner, return_inverse=True)
    images = prompt_inputs(prompts, distinct)
    features = base.model.get_image_features(images["pixel_values"], images["image_grid_thw"], return_dict=True)
    per_row = tuple(features.pooler_output[i] for i in local.tolist())
    inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}
    inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=per_row)}
    return inputs


def _shared_prefix_logits(model, prompts, owner, completion_ids, completion_mask) -> torch.Tensor:  # (n, C, V)
    distinct, local = torch.unique(owner, return_inverse=True)
    return prefix.completion_logits(model, prompt_inputs(prompts, distinct), local, completion_ids, completion_mask)
