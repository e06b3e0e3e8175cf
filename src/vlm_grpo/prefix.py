"""Work on a group's shared prompt done once: Qwen2-VL-family prefill, cache reuse, M-RoPE positions.

All G completions of a group share one image and one prompt. Prefilling each distinct prompt once
and repeating its KV cache for its rows is exact (attention over the cached prefix is the same
computation) and saves the vision encoder and prompt work of G-1 rows. Positions are passed
explicitly: text after the prompt continues one past the prompt's largest M-RoPE position on all
three axes (the model would otherwise reuse rope deltas it caches between calls). This relies on
model internals, so it is limited to the families whose internals were checked, and says so.
"""

from __future__ import annotations

import torch

FAMILIES = ("qwen2_vl", "qwen2_5_vl")


def base_model(model):
    """The transformers model (under a peft wrapper, its base), checked to be a supported family."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = base.config.model_type
    if family not in FAMILIES:
        raise NotImplementedError(
            f"prompt sharing relies on the M-RoPE and cache internals of {', '.join(FAMILIES)}; model type "
            f"{family!r} is not one of them: use logprob_sharing=none and generation_sharing=none")
    return base


def prefill(model, inputs: dict[str, torch.Tensor]):
    """Encode prompts once: (logits of the last prompt position (b, V), KV cache, next position (b,))."""
    base = base_model(model)
    positions, _ = base.model.get_rope_index(
        inputs["input_ids"], image_grid_thw=inputs.get("image_grid_thw"),
        attention_mask=inputs["attention_mask"], mm_token_type_ids=inputs["mm_token_type_ids"])
    out = model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.cache, positions.amax(dim=(0, 2)) + 1


def text_positions(start: torch.Tensor, length: int) -> torch.Tensor:  # (3, n, length)
    steps = torch.arange(length, device=start.device)
    return (start.unsqueeze(1) + steps).unsqueeze(0).expand(3, -1, -1)


def completion_logits(model, inputs, local: torch.Tensor, completion_ids, completion_mask) -> torch.Tensor:
    """Logits predicting each completion token (n, C, V); `inputs` holds the distinct prompts and
    `local` maps each completion row to its prompt in them."""
    last, cache, start = prefill(model, inputs)
    cache.batch_select_indices(local.to(start.device))
    attention = torch.cat([inputs["attention_mask"][local], completion_mask.to(inputs["attention_mask"].dtype)], dim=1)
    rest = model(input_ids=completion_ids, attention_mask=attention, cache=cache, use_cache=True,
                 position_ids=text_positions(start[local], completion_ids.size(1)))
    # The prompt's last position predicts the first completion token.
    return torch.cat([last[local].unsqueeze(1), rest.logits[:, :-1]], dim=1)


def pick_tokens(logits: torch.Tensor, temperature: float | None, top_p: float, top_k: int) -> torch.Tensor:
    """Greedy (temperature None) or sampled next tokens, warped as transformers does: T, top-k, top-p."""
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
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(1)


@torch.no_grad()
def sample(model, inputs, group_size: int, max_new_tokens: int, temperature: float | None, top_p: float,
           top_k: int, end_ids: list[int], pad_id: int, forbidden: list[int]) -> torch.Tensor:  # (B*G, T)
    """G completions per prompt from one prefill per prompt; rows that ended are padded."""
    last, cache, start = prefill(model, inputs)
    cache.batch_repeat_interleave(group_size)
    logits = last.repeat_interleave(group_size, dim=0)
    start = start.repeat_interleave(group_size)
    attention = inputs["attention_mask"].repeat_interleave(group_size, dim=0)
    ends = torch.tensor(end_ids, device=logits.device)
    finished = torch.zeros(logits.size(0), dtype=torch.bool, device=logits.device)
    tokens = []
    for step in range(max_new_tokens):
        logits[:, forbidden] = float("-inf")
        token = torch.where(finished, torch.full_like(finished, pad_id, dtype=torch.long),
                            pick_tokens(logits, temperature, top_p, top_k))
        tokens.append(token)
        finished |= torch.isin(token, ends)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        out = model(input_ids=token.unsqueeze(1), attention_mask=attention, cache=cache, use_cache=True,
                    position_ids=text_positions(start + step, 1))
        cache, logits = out.cache, out.logits[:, -1]
    return torch.stack(tokens, dim=1)
