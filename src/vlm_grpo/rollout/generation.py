"""Prompts in, G completions per prompt out: encoding, sampling from a shared prefix or with
transformers' `generate`, and the masks that mark where each completion ends.

Every model-family detail (end tokens, vision placeholders, prefill and positions) comes from
the model's family adapter.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..data import Sample
from ..models.compat import cache_of, with_cache
from ..models.families import FamilyAdapter, adapter_for
from ..models.families.frames import frame_sampling, video_call
from ..tasks.styles import PromptStyle
from .batch import MEDIA_KEYS, PromptBatch
from .kv_cache import preallocate


def encode_prompts(processor, style: PromptStyle, samples: list[Sample], device: torch.device) -> PromptBatch:
    images = [s.load_images() for s in samples]
    if any(s.video is not None for s in samples):
        return _encode_with_videos(processor, style, samples, images, device)
    texts = [
        processor.apply_chat_template(style.messages(s.question, len(i)), add_generation_prompt=True, tokenize=False)
        for s, i in zip(samples, images)
    ]
    # One list of images per prompt: the layout every family's processor reads the same way.
    inputs = processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="left")
    tensors = {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return PromptBatch(samples, tensors, [len(i) for i in images], texts)


def _encode_with_videos(processor, style: PromptStyle, samples: list[Sample], images, device) -> PromptBatch:
    """Prompts of which some show a video (before their images): the videos are sampled and sized as the
    processor's settings say, once (a video the prompt stream decoded is used as it is)."""
    sampling = frame_sampling(processor)
    if sampling is None:
        raise ValueError(f"the processor {type(processor).__name__} takes no videos")
    videos = [s.load_video(sampling) for s in samples]
    counts = [int(v is not None) for v in videos]
    texts = [
        processor.apply_chat_template(style.messages(s.question, len(i), n), add_generation_prompt=True, tokenize=False)
        for s, i, n in zip(samples, images, counts)
    ]
    shown = [v for v in videos if v is not None]
    inputs = processor(
        text=texts,
        images=images if any(images) else None,
        **video_call(processor, shown),
        return_tensors="pt",
        padding=True,
        padding_side="left",
    )
    tensors = {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    return PromptBatch(samples, tensors, [len(i) for i in images], texts, counts)


def mask_after_end(ids: torch.Tensor, end_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, truncated): mask is 1 up to and including the first end token of each row."""
    is_end = torch.isin(ids, torch.tensor(end_ids, device=ids.device))
    has_end = is_end.any(dim=1)
    first_end = torch.where(
        has_end, is_end.int().argmax(dim=1), torch.full_like(has_end, ids.size(1), dtype=torch.long)
    )
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
    (families whose adapter supports it); "none" uses transformers' generate, which prefills every
    row; "auto" picks prefix where the model's family supports it.
    """
    adapter = adapter_for(model)
    if sharing == "auto":
        sharing = "prefix" if adapter.supports_prefix else "none"
    end_ids = adapter.end_token_ids(processor, model)
    pad_id = processor.tokenizer.pad_token_id
    forbidden = adapter.vision_token_ids(model)
    was_training = model.training
    model.eval()
    try:
        if sharing == "prefix":
            ids = sample_from_prefix(
                adapter,
                model,
                prompts.inputs,
                group_size,
                max_new_tokens,
                temperature,
                top_p,
                top_k,
                end_ids,
                pad_id,
                forbidden,
            )
        elif sharing == "none":
            # Every knob is explicit: a checkpoint's generation_config (Qwen2-VL-Instruct ships top_k=1,
            # repetition_penalty=1.05) must not change the distribution GRPO's ratios assume.
            options = dict(
                do_sample=temperature is not None,
                max_new_tokens=max_new_tokens,
                num_return_sequences=group_size,
                eos_token_id=end_ids,
                pad_token_id=pad_id,
                repetition_penalty=1.0,
                use_cache=True,
                suppress_tokens=forbidden,
            )
            if temperature is not None:
                options.update(temperature=temperature, top_p=top_p, top_k=top_k)
            ids = model.generate(**prompts.inputs, **options)[:, prompts.inputs["input_ids"].size(1) :]
        else:
            raise ValueError(f"unknown generation_sharing {sharing!r}: use prefix or none")
    finally:
        model.train(was_training)
    mask, truncated = mask_after_end(ids, end_ids)
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad_id))
    texts = processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return ids, mask, truncated, texts


def pick_tokens(
    logits: torch.Tensor,  # (n, V)
    temperature: float | None,
    top_p: float,
    top_k: int,
    rows: torch.Tensor | None = None,  # (n,) each row's index in a batch of `batch_rows`
    batch_rows: int | None = None,
) -> torch.Tensor:  # (n,)
    """Greedy (temperature None) or sampled next tokens, warped as transformers does: T, top-k, top-p.

    Sampling is torch.multinomial's one-sample draw written out (argmax of p / q, q ~ Exp(1): the same
    draws for the same generator state). With `rows`, the noise is drawn for all `batch_rows` rows and
    row i takes line rows[i]: a row's draws do not depend on which other rows are still running.
    Like multinomial, it refuses probabilities that are not finite (NaN logits, say).
    """
    if temperature is None:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= 1 - top_p
        drop_sorted[:, -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = logits.softmax(dim=-1)
    if not bool(torch.isfinite(probs).all()):
        raise RuntimeError("sampling: the next-token probabilities are not finite (NaN or inf logits)")
    noise = torch.empty((batch_rows or probs.size(0), probs.size(1)), dtype=probs.dtype, device=probs.device)
    noise = noise.exponential_()
    return (probs / (noise if rows is None else noise[rows])).argmax(dim=-1)


@torch.no_grad()
def sample_from_prefix(
    adapter: FamilyAdapter,
    model,
    inputs,
    group_size: int,
    max_new_tokens: int,
    temperature: float | None,
    top_p: float,
    top_k: int,
    end_ids: list[int],
    pad_id: int,
    forbidden: list[int],
) -> torch.Tensor:  # (B*G, T)
    """G completions per prompt from one prefill per prompt; rows that ended are padded.

    Per token: the KV cache grows in place inside buffers sized for the whole run (`kv_cache`), the
    attention mask is a view of one tensor made up front, and rows that ended leave the batch once
    half of it has ended (so the cache is compacted at most log2(rows) times; rows that ended and
    still run feed padding, as before). A host sync per step reads how many rows are left (sampling
    adds one for the finite-probability check; a compaction one more). Each row's draws are those of
    the full batch (`pick_tokens(rows=...)`), so what is sampled is what decoding every row to the
    end would sample, token for token where a row's logits do not depend on the batch it is computed
    in (tested on CPU in float32; GPU matrix kernels may change with the batch size, and then the
    last bits of the logits).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    last, cache, start = adapter.prefill(model, inputs)
    preallocate(cache, group_size, max_new_tokens)
    logits = last[:, -1].repeat_interleave(group_size, dim=0)  # (R, V), R = B*G
    rows, prompt_len, device = logits.size(0), inputs["attention_mask"].size(1), logits.device
    start = start.repeat_interleave(group_size)  # (R,) each row's first completion position
    attention = inputs["attention_mask"].new_ones((rows, prompt_len + max_new_tokens))
    attention[:, :prompt_len] = inputs["attention_mask"].repeat_interleave(group_size, dim=0)
    ids = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    live = torch.arange(rows, device=device)  # (n,) batch index of each row in the running batch
    ended = torch.zeros(rows, dtype=torch.bool, device=device)  # (n,) rows of the running batch that ended
    ends, forbidden_ids = torch.tensor(end_ids, device=device), torch.tensor(forbidden, device=device, dtype=torch.long)
    for step in range(max_new_tokens):
        logits.index_fill_(1, forbidden_ids, float("-inf"))
        subset = live.numel() < rows
        token = pick_tokens(logits, temperature, top_p, top_k, live if subset else None, rows)
        token = token.masked_fill(ended, pad_id)
        if subset:
            ids[live, step] = token
        else:
            ids[:, step] = token
        ended |= torch.isin(token, ends)
        running = live.numel() - int(ended.sum())  # host sync: how many rows are left
        if running == 0 or step == max_new_tokens - 1:
            break
        if running <= live.numel() // 2:  # half the batch ended: compact (at most log2(rows) times)
            keep = (~ended).nonzero().squeeze(1)
            live, token, start, attention, ended = live[keep], token[keep], start[keep], attention[keep], ended[keep]
            cache.batch_select_indices(keep)
        out = model(
            input_ids=token.unsqueeze(1),
            attention_mask=attention[:, : prompt_len + step + 1],
            use_cache=True,
            position_ids=adapter.positions(start + step, 1),
            **with_cache(cache),
        )
        cache, logits = cache_of(out), out.logits[:, -1]
    return ids[:, : step + 1].contiguous()


def with_prefixes(inputs: dict[str, torch.Tensor], prefixes: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt inputs (k rows) with each row's `prefix` appended, padded on the left again
    so that every row still ends at the right edge. Image and video inputs are unchanged."""
    longest = max(len(p) for p in prefixes)
    out = dict(inputs)
    width = inputs["input_ids"].size(1)
    for key, value in inputs.items():
        if key in MEDIA_KEYS or value.dim() != 2 or value.size(1) != width:
            continue
        rows = []
        for row, prefix in zip(value, prefixes):
            if key == "input_ids":
                left, right = pad_id, torch.tensor(prefix, dtype=value.dtype, device=value.device)
            else:  # attention_mask: 1 over the prefix; token types and the like: 0 (text)
                left, right = (
                    0,
                    torch.full((len(prefix),), int(key == "attention_mask"), dtype=value.dtype, device=value.device),
                )
            rows.append(
                torch.cat(
                    [torch.full((longest - len(prefix),), left, dtype=value.dtype, device=value.device), row, right]
                )
            )
        out[key] = torch.stack(rows)
    return out


def continue_prefixes(
    engine,
    prompts: PromptBatch,
    rows: list[int],  # completion rows; row n continues prompt n // group_size
    prefixes: list[list[int]],
    group_size: int,
    params,  # SamplingParams; its max_tokens is the whole completion's budget, prefix included
) -> list[tuple[list[int], bool]]:
    """Per row, `engine`'s continuation of its prompt plus `prefix` (ending with an end token, or cut
    at max_tokens - len(prefix) and truncated; a prefix that fills max_tokens leaves no room: empty
    and truncated). No rows: nothing runs."""
    room = [params.max_tokens - len(p) for p in prefixes]
    out: list[tuple[list[int], bool]] = [([], True) for _ in rows]
    live = [i for i, r in enumerate(room) if r > 0]
    if not live:
        return out
    selected = prompts.subset([rows[i] // group_size for i in live])
    budget = max(room[i] for i in live)
    done = engine.sample(selected, replace(params, group_size=1, max_tokens=budget), [prefixes[i] for i in live])
    for i, row_ids, row_mask, cut in zip(live, done.ids, done.mask, done.truncated):
        tokens = row_ids[row_mask.bool()].tolist()
        out[i] = (tokens[: room[i]], bool(cut) or len(tokens) > room[i])
    return out
