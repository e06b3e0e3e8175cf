"""Per-token log-probs of completion rows under a model, from its final hidden states.

Inside every forward, the hidden states the output head would have projected go to
`core.head.token_logprobs` instead (`FamilyAdapter.head_replaced`), which applies the head a chunk
of completion tokens at a time: the (rows, C, V) logits never exist, which at a 152k vocabulary and
thousand-token completions is the difference between fitting and not, and the forward returns
per-token log-probs where it returned logits. Only completion tokens are projected (padding is
skipped); positions past a row's end get log-prob 0.

`prefix`: each distinct prompt (image included) is encoded once, its KV cache is repeated for
its rows, and only completion tokens run again; exact (the same log-probs as the per-row pass
within float rounding) because attention over the cached prefix is the same computation.
`vision`: each image (and video) is encoded once and its features are handed to its rows, which run whole
(works with activation checkpointing, which turns the cache off). `none`: one forward over
prompt + completion per row, as other trainers do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.head import token_logprobs
from ..models.compat import takes_image_features, with_cache
from ..models.families import FamilyAdapter, adapter_for, base_model
from .batch import PromptBatch, RowTurns, conversation_inputs, image_rows, tool_token_mask


def completion_logprobs(
    model,
    prompts: PromptBatch,
    rows: torch.Tensor,  # (n,) row indices into the rollout
    completion_ids: torch.Tensor,  # (n, C)
    completion_mask: torch.Tensor,  # (n, C)
    group_size: int,
    temperature: float = 1.0,
    sharing: str = "prefix",
    turns: list[RowTurns | None] | None = None,  # (n,) the rows' tool turns (rollout.row_turns(rows))
    chunk_tokens: int = 0,  # completion tokens per chunk of the output head; 0: core.head's default
) -> torch.Tensor:  # (n, C) float32, 0 past each row's end
    if turns is not None and any(t is not None and t.tool_tokens for t in turns):
        args = (rows, completion_ids, completion_mask, group_size, temperature, sharing)
        return _with_tool_turns(model, prompts, *args, turns, chunk_tokens)
    adapter = adapter_for(model)
    owner = rows // group_size
    score = Scoring(adapter, model, temperature, chunk_tokens)
    if sharing == "prefix":
        return _shared_prefix_logprobs(score, prompts, owner, completion_ids, completion_mask)
    if sharing == "vision" and adapter.supports_feature_sharing and not takes_image_features(base_model(model)):
        sharing = "none"  # this transformers cannot take encoded images (`takes_image_features`): the same values
    if sharing in ("vision", "none"):
        return _per_row_logprobs(score, prompts, owner, completion_ids, completion_mask, sharing == "vision")
    raise ValueError(f"unknown logprob_sharing {sharing!r}: use prefix, vision or none")


@dataclass
class Scoring:
    """What a pass scores with: the model, its adapter, the sampling temperature, the head's chunk."""

    adapter: FamilyAdapter
    model: torch.nn.Module
    temperature: float
    chunk_tokens: int

    def targets(self, *calls: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]):
        """A block in which the i-th forward returns, instead of logits, the log-probs of `calls[i]`:
        (tokens (r, t), mask (r, t), rows (r,) of the head's input they read, or None for all) -> (r, t),
        0 where the mask is off. The vision placeholders are suppressed as in generation, so these are
        the sampling distribution's log-probs."""
        queue = list(calls)
        forbidden = torch.tensor(self.adapter.vision_token_ids(self.model), dtype=torch.long)

        def project(hidden: torch.Tensor, head) -> torch.Tensor:
            tokens, mask, rows = queue.pop(0)
            hidden = hidden if rows is None else hidden[rows.to(hidden.device)]
            where, tokens = mask.to(hidden.device).bool(), tokens.to(hidden.device)
            args = (self.temperature, forbidden.to(hidden.device), self.chunk_tokens)
            picked = token_logprobs(hidden[where], head, tokens[where], *args)
            return torch.zeros(where.shape, dtype=picked.dtype, device=hidden.device).masked_scatter(where, picked)

        return self.adapter.head_replaced(self.model, project)


def _one_more(tensor: torch.Tensor) -> torch.Tensor:  # (n, C) -> (n, C + 1), the last column 0
    return torch.nn.functional.pad(tensor, (0, 1))


def _per_row_logprobs(
    score: Scoring, prompts, owner, completion_ids, completion_mask, share_vision=False
) -> torch.Tensor:  # (n, C)
    """Whole rows; with share_vision, each distinct image is encoded once. The last prompt position
    and every completion position but the last predict the completion's tokens."""
    inputs = prompts.select(owner)
    if share_vision and ("pixel_values" in inputs or "pixel_values_videos" in inputs):
        inputs = _with_shared_vision_features(score.adapter, score.model, prompts, owner, inputs)
    width = completion_ids.size(1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], completion_ids], dim=1)
    attention = completion_mask.to(inputs["attention_mask"].dtype)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], attention], dim=1)
    if "mm_token_type_ids" in inputs:
        text_type = torch.zeros_like(completion_ids, dtype=inputs["mm_token_type_ids"].dtype)
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], text_type], dim=1)
    with score.targets((_one_more(completion_ids), _one_more(completion_mask), None)):
        out = score.model(**inputs, use_cache=False, logits_to_keep=width + 1)
    return out.logits[:, :-1]


def _with_shared_vision_features(adapter: FamilyAdapter, model, prompts, owner, inputs) -> dict:
    """`inputs` with each distinct prompt's images (and videos) encoded once, handed to its rows."""
    distinct, local = torch.unique(owner, return_inverse=True)
    media, encoded = prompts.select(distinct), {}
    if "pixel_values" in media:
        features = adapter.image_features(model, media["pixel_values"], media["image_grid_thw"])
        # Features come image by image for the distinct prompts; each row takes its prompt's images, in order.
        counts = [prompts.image_counts[i] for i in distinct.tolist()]
        per_row = tuple(features[i] for i in image_rows(counts, local.tolist()))
        encoded["image"] = adapter.image_encoder_output(per_row)
    if "pixel_values_videos" in media:
        features = adapter.video_features(model, media["pixel_values_videos"], media["video_grid_thw"])
        counts = [prompts.video_counts[i] for i in distinct.tolist()]
        per_row = tuple(features[i] for i in image_rows(counts, local.tolist()))
        encoded["video"] = adapter.image_encoder_output(per_row)
    inputs = {k: v for k, v in inputs.items() if k not in ("pixel_values", "pixel_values_videos")}
    inputs["mm_encoder_outputs"] = encoded
    return inputs


def _shared_prefix_logprobs(score: Scoring, prompts, owner, completion_ids, completion_mask) -> torch.Tensor:
    """Distinct prompts prefilled once, cache rows selected: the prompt's last position predicts each
    row's first token, the completion's positions the rest."""
    distinct, local = torch.unique(owner, return_inverse=True)
    inputs = prompts.select(distinct)
    first = (completion_ids[:, :1], completion_mask[:, :1], local)
    rest = (_one_more(completion_ids[:, 1:]), _one_more(completion_mask[:, 1:]), None)
    with score.targets(first, rest):
        first_logp, cache, start = score.adapter.prefill(score.model, inputs)  # (n, 1)
        cache.batch_select_indices(local.to(start.device))
        prompt_attention = inputs["attention_mask"][local]
        attention = torch.cat([prompt_attention, completion_mask.to(prompt_attention.dtype)], dim=1)
        positions = score.adapter.positions(start[local], completion_ids.size(1))
        out = score.model(
            input_ids=completion_ids,
            attention_mask=attention,
            use_cache=True,
            position_ids=positions,
            **with_cache(cache),
        )
    return torch.cat([first_logp, out.logits[:, :-1]], dim=1)


def _with_tool_turns(
    model, prompts, rows, completion_ids, completion_mask, group_size, temperature, sharing, turns, chunk_tokens
) -> torch.Tensor:  # (n, C)
    """Rows whose tool turns showed images run whole, one by one, with their images in order (prompt
    images, then the tools'); the other rows as `sharing` says (a text tool turn is text like any
    other). Tool tokens get log-prob 0: they are the tool's, not the policy's (the loss masks them)."""
    whole = [i for i, t in enumerate(turns) if t is not None and t.has_images]
    rest = sorted(set(range(len(turns))) - set(whole))
    parts: dict[int, torch.Tensor] = {}
    if rest:
        index = torch.tensor(rest)
        args = (rows[index], completion_ids[index], completion_mask[index], group_size, temperature, sharing)
        parts.update(zip(rest, completion_logprobs(model, prompts, *args, chunk_tokens=chunk_tokens)))
    score = Scoring(adapter_for(model), model, temperature, chunk_tokens)
    for i in whole:
        length = int(completion_mask[i].sum())
        tokens = completion_ids[i : i + 1, :length]
        inputs = conversation_inputs(prompts, int(rows[i]) // group_size, tokens[0].tolist(), turns[i])
        with score.targets((_one_more(tokens), _one_more(torch.ones_like(tokens)), None)):
            logp = model(**inputs, use_cache=False, logits_to_keep=length + 1).logits[0, :-1]
        parts[i] = torch.nn.functional.pad(logp, (0, completion_ids.size(1) - length))
    out = torch.stack([parts[i] for i in range(len(turns))])
    return out.masked_fill(tool_token_mask(turns, completion_ids.size(1)).to(out.device), 0.0)
