"""Typed containers of one step: the prompts, the rollout, and the batch the update trains on.

Shapes: B prompts, G completions per prompt, N = B*G completion rows, C completion tokens, P
prompt tokens. Rows are prompt-major: row n belongs to prompt n // G. Every row records whether
its tokens were sampled from the policy or injected as a demonstration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.losses import LossInputs
from ..data import Sample
from ..tasks import Score

IMAGE_KEYS = ("pixel_values", "image_grid_thw")
"""Model inputs counted by image (Qwen's flattened patches and grids), concatenated across turns."""
VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
"""Model inputs counted by video (Qwen's flattened frame patches, grids, and Qwen2.5-VL's seconds per
frame pair)."""
MEDIA_KEYS = IMAGE_KEYS + VIDEO_KEYS


def image_rows(image_counts: list[int], prompts: list[int]) -> list[int]:
    """Indices of the images of `prompts` (repeats allowed) when prompt i shows image_counts[i] images."""
    first = [0]
    for count in image_counts:
        first.append(first[-1] + count)
    return [image for p in prompts for image in range(first[p], first[p + 1])]


@dataclass
class RowTurns:
    """One row's turns: which of its completion tokens the tools wrote, and what they showed it."""

    tool_tokens: list[bool] = field(default_factory=list)
    """Per completion token: written by a tool turn (attended, not trained)."""
    token_types: list[int] = field(default_factory=list)
    """Per completion token: its mm_token_type_id (1 on a tool image's placeholders)."""
    image_inputs: list[dict[str, torch.Tensor]] = field(default_factory=list)
    """The processor's image inputs of each tool turn that showed images, in order."""
    shown: list = field(default_factory=list)
    """The tools' images themselves (PIL), in order: what an engine in another process encodes again."""
    calls: int = 0
    """Tool calls the policy wrote (well-formed or not)."""
    valid_calls: int = 0
    """Calls that ran and answered."""
    failures: int = 0
    """Calls whose tool itself failed (raised, timed out, ran out of memory)."""
    turns: int = 1
    """Assistant turns."""
    transcript: str = ""
    """The whole conversation after the prompt, tool turns included, as text."""

    @property
    def has_images(self) -> bool:
        return bool(self.image_inputs)

    def images(self) -> dict[str, torch.Tensor]:
        """The row's tool images as model inputs, concatenated by image."""
        return {key: torch.cat([part[key] for part in self.image_inputs]) for key in self.image_inputs[0]}


def tool_token_mask(turns: list[RowTurns | None], width: int) -> torch.Tensor:  # (n, width) bool
    """Tokens written by tools, rows padded (or cut) to `width`; rows without turns are all False."""
    mask = torch.zeros((len(turns), width), dtype=torch.bool)
    for row, row_turns in enumerate(turns):
        if row_turns is not None and row_turns.tool_tokens:
            marks = torch.tensor(row_turns.tool_tokens[:width], dtype=torch.bool)
            mask[row, : marks.numel()] = marks
    return mask


@dataclass
class PromptBatch:
    """B prompts, encoded once; left-padded so that generation continues from the right edge."""

    samples: list[Sample]
    inputs: dict[str, torch.Tensor]
    """input_ids, attention_mask, mm_token_type_ids: (B, P); image inputs per image or per prompt
    (Qwen: pixel_values (patches, D) and image_grid_thw (images, 3))."""
    image_counts: list[int] | None = None
    """Images of each prompt, in order (None: one each)."""
    texts: list[str] | None = None
    """Each prompt as the chat template wrote it (one placeholder per image, not expanded): what an
    engine in another process tokenizes again. None where the batch was built by hand."""
    video_counts: list[int] | None = None
    """Videos of each prompt (0 or 1; None: no prompt shows one)."""

    def __post_init__(self) -> None:
        if self.image_counts is None:
            self.image_counts = [1] * len(self.samples)

    def subset(self, index: list[int]) -> PromptBatch:
        """The prompts at `index` (repeats allowed), as a batch of their own."""
        texts = [self.texts[i] for i in index] if self.texts is not None else None
        videos = [self.video_counts[i] for i in index] if self.video_counts is not None else None
        return PromptBatch(
            [self.samples[i] for i in index],
            self.select(torch.tensor(index, dtype=torch.long)),
            [self.image_counts[i] for i in index],
            texts,
            videos,
        )

    def image_rows(self, prompts: list[int]) -> list[int]:
        """Indices of the images of `prompts`, prompt by prompt, in order."""
        return image_rows(self.image_counts, prompts)

    def select(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs of the prompts at `index` (repeats allowed), images and videos included. A tensor
        whose first dimension counts prompts is taken by prompt, one that counts images by image, a video
        input by video; Qwen's flattened patches are cut by image_grid_thw (video_grid_thw)."""
        device = self.inputs["input_ids"].device
        prompts = index.tolist()
        images = self.image_rows(prompts)
        by_prompt, by_image = index.to(device), torch.tensor(images, dtype=torch.long, device=device)
        out = {}
        shown = {key: bool(images) for key in IMAGE_KEYS} | {key: self._has_video(prompts) for key in VIDEO_KEYS}
        for key, value in self.inputs.items():
            if not shown.get(key, True):
                continue  # the prompts at `index` show no image (or no video): the model is given none
            if key == "pixel_values" and "image_grid_thw" in self.inputs:
                chunks = torch.split(value, self.inputs["image_grid_thw"].prod(-1).tolist())
                out[key] = torch.cat([chunks[i] for i in images])
            elif key in VIDEO_KEYS:
                out[key] = self._by_video(key, value, prompts)
            elif key == "image_grid_thw" and self.video_counts is not None:
                out[key] = value[by_image.to(value.device)]  # prompts may show no image: never by prompt
            elif value.size(0) == len(self.samples):
                out[key] = value[by_prompt.to(value.device)]
            elif value.size(0) == sum(self.image_counts):
                out[key] = value[by_image.to(value.device)]
            else:
                raise ValueError(f"model input {key!r} of shape {tuple(value.shape)}: neither per prompt nor per image")
        return out

    def _has_video(self, prompts: list[int]) -> bool:
        return self.video_counts is not None and any(self.video_counts[p] for p in prompts)

    def _by_video(self, key: str, value: torch.Tensor, prompts: list[int]) -> torch.Tensor:
        """A video input of the prompts `prompts`: their videos' rows (the patches cut by video_grid_thw)."""
        videos = image_rows(self.video_counts or [], prompts)
        if key == "pixel_values_videos":
            chunks = torch.split(value, self.inputs["video_grid_thw"].prod(-1).tolist())
            return torch.cat([chunks[i] for i in videos])
        return value[torch.tensor(videos, dtype=torch.long, device=value.device)]


@dataclass
class Conversation:
    """A conversation to continue: prompt `prompt` of a batch, then `tokens`, the policy's and the
    tools' turns so far, which `turns` describes (tool tokens, their types and images)."""

    prompt: int
    tokens: list[int]
    turns: RowTurns


def conversation_batch(prompts: PromptBatch, conversations: list[Conversation], pad_id: int) -> PromptBatch:
    """One prompt per conversation: its prompt, its tokens so far and every image it has seen,
    left-padded so that sampling continues from the right edge."""
    parts = [conversation_inputs(prompts, c.prompt, c.tokens, c.turns) for c in conversations]
    longest = max(part["input_ids"].size(1) for part in parts)
    inputs: dict[str, torch.Tensor] = {}
    for key in parts[0]:
        if key in IMAGE_KEYS:
            inputs[key] = torch.cat([part[key] for part in parts])
            continue
        fill = pad_id if key == "input_ids" else 0
        inputs[key] = torch.cat(
            [torch.nn.functional.pad(part[key], (longest - part[key].size(1), 0), value=fill) for part in parts]
        )
    counts = [prompts.image_counts[c.prompt] + _image_count(c.turns) for c in conversations]
    return PromptBatch([prompts.samples[c.prompt] for c in conversations], inputs, counts, None)


def conversation_inputs(prompts: PromptBatch, prompt: int, tokens: list[int], turns: RowTurns) -> dict:
    """Model inputs (batch of one, no padding) of prompt `prompt` followed by `tokens`, the completion
    so far, with the tool images of `turns` after the prompt's own."""
    if prompts.video_counts is not None and prompts.video_counts[prompt]:
        raise NotImplementedError("tool turns after a prompt with a video are not supported: use tools with images")
    base = prompts.select(torch.tensor([prompt]))
    keep = base["attention_mask"][0].bool()
    device = base["input_ids"].device
    completion = torch.tensor([tokens], dtype=base["input_ids"].dtype, device=device)
    out = {}
    for key, value in base.items():
        if key in IMAGE_KEYS:
            extra = [value] + ([turns.images()[key].to(value.device, value.dtype)] if turns.has_images else [])
            out[key] = torch.cat(extra)
        elif key == "input_ids":
            out[key] = torch.cat([value[:, keep], completion], dim=1)
        elif key == "attention_mask":
            out[key] = torch.cat([value[:, keep], torch.ones_like(completion, dtype=value.dtype)], dim=1)
        else:  # mm_token_type_ids and the like: the completion's own types
            types = torch.tensor([turns.token_types[: len(tokens)]], dtype=value.dtype, device=value.device)
            out[key] = torch.cat([value[:, keep], types], dim=1)
    return out


def _image_count(turns: RowTurns) -> int:
    return sum(int(part["image_grid_thw"].size(0)) for part in turns.image_inputs) if turns.image_inputs else 0


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
    """(N,) bool: the row holds a ground-truth demonstration (whole, or as the prefix the policy continued)."""
    demo_tokens: torch.Tensor = field(default=None)  # type: ignore[assignment]
    """(N, C) bool: tokens copied from a demonstration, not sampled (off-policy); default: every
    completion token of an injected row."""
    engine_logp: torch.Tensor | None = None
    """(N, C) the sampling engine's own log-prob of each sampled token (engines that report them; 0 on
    injected rows' tokens, which the engine did not sample); None: the trainer's model sampled."""
    turns: list[RowTurns | None] | None = None
    """(N,) each row's tool turns (`rollout/turns.py`; None for a row without them); None: every
    row is one turn."""

    def __post_init__(self) -> None:
        if self.injected is None:
            self.injected = torch.zeros(len(self.texts), dtype=torch.bool)
        if self.demo_tokens is None:
            mask = self.completion_mask
            self.demo_tokens = self.injected.to(mask.device).unsqueeze(1) & mask.bool()

    @property
    def rewards(self) -> torch.Tensor:  # (N,)
        return torch.tensor([s.reward for s in self.scores], dtype=torch.float32)

    def answer_of_row(self, row: int) -> Any:
        return self.prompts.samples[row // self.group_size].answer

    def micro_batches(self, rows: torch.Tensor, size: int, tokens: int = 0, per_row: int = 0) -> list[torch.Tensor]:
        """`rows` cut into forward/backward passes: `size` rows each, in order; or, with a token budget
        (`tokens` > 0), grouped by length (`micro_batches_by_tokens`). `per_row`: tokens each row's pass
        runs besides its completion (the prompt, where the pass does not share it)."""
        if tokens <= 0:
            return list(rows.split(size))
        lengths = self.completion_mask[rows].sum(1)
        return [rows[group] for group in micro_batches_by_tokens(lengths, tokens, per_row)]

    def width(self, rows: torch.Tensor) -> int:
        """The longest completion among `rows` (at least 1): a pass over them runs to it, no further."""
        return max(1, int(self.completion_mask[rows].sum(1).max()))

    def row_turns(self, rows: torch.Tensor) -> list[RowTurns | None] | None:
        """The tool turns of `rows`, in order; None when no row has any."""
        return None if self.turns is None else [self.turns[row] for row in rows.tolist()]

    @property
    def tool_tokens(self) -> torch.Tensor:  # (N, C) bool
        """Completion tokens written by tool turns: attended to, never trained."""
        width = self.completion_ids.size(1)
        if self.turns is None:
            return torch.zeros(self.completion_ids.shape, dtype=torch.bool)
        return tool_token_mask(self.turns, width)


@dataclass
class MicroBatch:
    """The rows of one forward/backward, cut to their longest completion (width w)."""

    rows: torch.Tensor
    """(n,) row indices into the step's rollout."""
    completion_ids: torch.Tensor
    """(n, w)"""
    completion_mask: torch.Tensor
    """(n, w) 1 on completion tokens (what the model attends to)."""
    loss_mask: torch.Tensor
    """(n, w) 1 on tokens that enter the loss."""
    advantages: torch.Tensor
    """(n,)"""
    injected: torch.Tensor
    """(n,) bool"""
    demo_tokens: torch.Tensor
    """(n, w) bool: tokens copied from a demonstration."""
    old_logp: torch.Tensor | None
    """(n, w) rollout-time log-probs; None when the pass's own detached log-probs are exact."""
    ref_logp: torch.Tensor | None
    """(n, w) reference log-probs; None without a reference."""
    is_weights: torch.Tensor | None = None
    """(n, w) truncated importance weights for the engine's sampling policy; None: 1."""
    token_advantages: torch.Tensor | None = None
    """(n, w) added to each row's advantage token by token; None: none."""
    teacher_logp: torch.Tensor | None = None
    """(n, w) a teacher's log-probs of the tokens; None: no teacher term."""
    teacher_weight: torch.Tensor | None = None
    """(n, w) weight of the per-token KL to the teacher."""

    def loss_inputs(
        self, minibatch_tokens: float, minibatch_rows: int, step_tokens: float, max_completion_length: int
    ) -> LossInputs:
        """What `core.losses.grpo_loss` reads of this micro-batch, with its minibatch's and step's counts."""
        return LossInputs(
            self.advantages,
            self.loss_mask,
            minibatch_tokens,
            minibatch_rows,
            old_logp=self.old_logp,
            ref_logp=self.ref_logp,
            injected=self.injected,
            demo_tokens=self.demo_tokens,
            is_weights=self.is_weights,
            step_tokens=step_tokens,
            max_completion_length=max_completion_length,
            token_advantages=self.token_advantages,
            teacher_logp=self.teacher_logp,
            teacher_weight=self.teacher_weight,
        )


@dataclass
class StepBatch:
    """What the update phase trains on: the rollout and everything fixed for its epochs."""

    rollout: Rollout
    advantages: torch.Tensor
    """(N,) group-normalised advantages, on the training device."""
    loss_mask: torch.Tensor
    """(N, C) completion mask, minus rows excluded from the loss (truncated ones, when asked)."""
    old_logp: torch.Tensor | None = None
    """(N, C) rollout-time log-probs, or None (one update per step: the update's own are exact)."""
    ref_logp: torch.Tensor | None = None
    """(N, C) reference log-probs, or None."""
    is_weights: torch.Tensor | None = None
    """(N, C) truncated importance weights p_trainer / p_engine, capped (engines with log-probs of
    their own); None: every token weighs 1."""
    first_epoch_order: torch.Tensor | None = None
    """(N,) the first epoch's row order, drawn before the rollout-time log-probs so that they run over
    the first epoch's own micro-batches; None: drawn when the first epoch starts."""
    token_advantages: torch.Tensor | None = None
    """(N, C) added to each row's advantage token by token, set by a remedy (`Remedy.after_batch`:
    on-policy distillation's coef x (log p_teacher - log p_rollout)); None: none."""
    teacher_logp: torch.Tensor | None = None
    """(N, C) a teacher's log-probs of every completion token, for a loss term toward it; None: none."""
    teacher_weight: torch.Tensor | None = None
    """(N, C) weight of the k3 KL to the teacher per token (0 on tokens not distilled), with teacher_logp."""

    @property
    def size(self) -> int:
        return len(self.rollout.texts)

    def epoch_minibatches(self, minibatch_size: int, epoch: int = 0) -> list[torch.Tensor]:
        """Epoch `epoch`'s minibatches of row indices (the first epoch's order when it was drawn)."""
        first = epoch == 0 and self.first_epoch_order is not None
        order = self.first_epoch_order if first else group_order(self.rollout)
        return list(order.split(minibatch_size))

    def tokens(self, rows: torch.Tensor) -> float:
        return float(self.loss_mask[rows].sum())

    def select(self, rows: torch.Tensor) -> MicroBatch:
        rollout = self.rollout
        width = rollout.width(rows)
        device = self.advantages.device
        return MicroBatch(
            rows=rows,
            completion_ids=rollout.completion_ids[rows, :width],
            completion_mask=rollout.completion_mask[rows, :width],
            loss_mask=self.loss_mask[rows, :width].to(device),
            advantages=self.advantages[rows],
            injected=rollout.injected.to(device)[rows],
            demo_tokens=rollout.demo_tokens[rows, :width].to(device),
            old_logp=_cut(self.old_logp, rows, width),
            ref_logp=_cut(self.ref_logp, rows, width),
            is_weights=_cut(self.is_weights, rows, width),
            token_advantages=_cut(self.token_advantages, rows, width),
            teacher_logp=_cut(self.teacher_logp, rows, width),
            teacher_weight=_cut(self.teacher_weight, rows, width),
        )


def _cut(tensor: torch.Tensor | None, rows: torch.Tensor, width: int) -> torch.Tensor | None:  # (n, width)
    return tensor[rows, :width] if tensor is not None else None


def group_order(rollout: Rollout) -> torch.Tensor:  # (N,)
    """A row order with whole groups shuffled, so that a micro-batch holds few distinct prompts to encode."""
    G = rollout.group_size
    return (torch.randperm(len(rollout.texts) // G).unsqueeze(1) * G + torch.arange(G)).flatten()


def micro_batches_by_tokens(lengths: torch.Tensor, budget: int, per_row: int = 0) -> list[torch.Tensor]:
    """Positions into `lengths` (n,) grouped for forward/backward passes: longest first, a group grows
    while its rows x (per_row + its longest length) stays within `budget`; a row over the budget runs
    alone. Sorting keeps the padding small: a group's rows are as long as each other as the rows
    allow."""
    order = torch.argsort(lengths, descending=True, stable=True).tolist()
    groups: list[list[int]] = []
    for i in order:
        if groups and (len(groups[-1]) + 1) * (per_row + int(lengths[groups[-1][0]])) <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return [torch.tensor(group, dtype=torch.long) for group in groups]


def padding_share(micros: list[torch.Tensor], lengths: torch.Tensor) -> float:
    """Share of the completion positions the passes over `micros` compute that are padding: each pass
    runs its rows to its longest one. `lengths` (N,) are every row's completion lengths."""
    computed = sum(len(m) * int(lengths[m].max()) for m in micros if len(m))
    return 1.0 - float(sum(lengths[m].sum() for m in micros)) / computed if computed else 0.0


def take_groups(picks: list[tuple[Rollout, int]], prompts: PromptBatch, pad_id: int) -> Rollout:
    """A rollout of the groups `picks` ((rollout, group index), in order) over `prompts`, which hold
    exactly their samples, encoded again; completions are right-padded with `pad_id` to one width."""
    G = picks[0][0].group_size
    rows = [(rollout, group * G + i) for rollout, group in picks for i in range(G)]
    width = max(rollout.completion_ids.size(1) for rollout, _ in picks)

    def stacked(name: str, value: float) -> torch.Tensor:
        parts = [getattr(rollout, name)[row] for rollout, row in rows]
        return torch.stack([torch.nn.functional.pad(t, (0, width - t.size(0)), value=value) for t in parts])

    return Rollout(
        prompts,
        G,
        stacked("completion_ids", pad_id),
        stacked("completion_mask", 0),
        torch.stack([rollout.truncated[row] for rollout, row in rows]),
        [rollout.texts[row] for rollout, row in rows],
        [rollout.scores[row] for rollout, row in rows],
        torch.stack([rollout.injected[row] for rollout, row in rows]),
        stacked("demo_tokens", False),
        stacked("engine_logp", 0.0) if all(r.engine_logp is not None for r, _ in picks) else None,
        [rollout.turns[row] if rollout.turns is not None else None for rollout, row in rows]
        if any(rollout.turns is not None for rollout, _ in picks)
        else None,
    )
