"""Multi-turn rollouts: the policy writes a tool call, the tool answers in the next user turn, and
the policy goes on, up to `max_turns` assistant turns and `max_tokens` completion tokens in all.

A row's completion is one token sequence: the policy's turns and, between them, the tool turns
(`<tool_response>` text and any new images, written in the family's own chat template, so the model
reads exactly what a conversation with that turn would give it). Tool tokens are attended to but
never trained: `RowTurns.tool_tokens` marks them, the loss mask drops them, and their log-probs are
0. A row whose tool turns hold images is passed whole, its images in order (prompt images, then
the tools'), so M-RoPE positions and image features are the model's own for that conversation.

`ToolEngine` wraps any engine: the first turn is the inner engine's ordinary draw of G completions
per prompt, so rows without a call are exactly what the inner engine sampled; each later turn
samples, for the rows that called a tool, one continuation of their conversation so far.
Scoring reads the final turn outside its tool calls (`Completions.texts`): a conversation that ends
on a call, cut before the tool's turn or out of turns, has answered nothing. The whole conversation
is in `transcript`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..tools import Tool
from ..tools.calls import CallError, has_call, outside_calls, parse_call, write_call
from ..tools.runner import run_tool
from .batch import IMAGE_KEYS, Conversation, PromptBatch, RowTurns
from .engines.base import Completions, SamplingParams

RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"


def turn_tokens(tokenizer, text: str, end_id: int) -> list[int]:
    """A turn as the policy writes it: the text's tokens, then the end-of-turn token that stops it."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] + [end_id]


class ToolTurnWriter:
    """Tool turns as tokens, in the model's chat template: the text that follows an assistant turn's
    end token up to the next assistant header, with the tool's output as a user turn."""

    def __init__(self, processor, turn_end_id: int):
        self.processor = processor
        tokenizer = processor.tokenizer
        end_text = tokenizer.decode([turn_end_id])
        user = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
        before = self._render(user + [{"role": "assistant", "content": [{"type": "text", "text": "a"}]}], False)
        probe = self._render(self._conversation(user, "", 0), True)
        cut = before.rfind(end_text)
        if cut < 0 or not probe.startswith(before):
            raise ValueError(
                "tools need a chat template that continues a conversation by appending turns; this model's does not"
            )
        self.after_end = before[cut + len(end_text) :]
        """What the template writes after an assistant turn's end token (Qwen: a newline)."""
        self.prefix_chars = len(before)

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)

    @staticmethod
    def _conversation(user: list[dict], text: str, images: int) -> list[dict]:
        content = (
            [{"type": "text", "text": RESPONSE_OPEN}]
            + [{"type": "image"}] * images
            + [{"type": "text", "text": f"{text}{RESPONSE_CLOSE}"}]
        )
        return user + [
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
            {"role": "user", "content": content},
        ]

    def text(self, output_text: str, images: int) -> str:
        """The tool turn after the policy's end token, through the next assistant header."""
        user = [{"role": "user", "content": [{"type": "text", "text": "q"}]}]
        whole = self._render(self._conversation(user, output_text, images), True)
        return self.after_end + whole[self.prefix_chars :]

    def encode(
        self, output_text: str, images: list
    ) -> tuple[list[int], list[int], dict[str, torch.Tensor] | None, str]:
        """(token ids, token types, image inputs or None, text) of the tool turn."""
        text = self.text(output_text, len(images))
        encoded = self.processor(text=[text], images=[images] if images else None, return_tensors="pt")
        ids = encoded["input_ids"][0].tolist()
        types = encoded["mm_token_type_ids"][0].tolist() if "mm_token_type_ids" in encoded else [0] * len(ids)
        image_inputs = {key: encoded[key] for key in IMAGE_KEYS if key in encoded} if images else None
        return ids, types, image_inputs, text


@dataclass
class _Row:
    """A conversation being sampled: its tokens so far and what its last turn said."""

    sample_images: list
    turns: RowTurns
    tokens: list[int]
    last_text: str
    truncated: bool
    logprobs: list[float] = field(default_factory=list)
    """Per token, the engine's own log-prob of a sampled token (0 on tool tokens); kept only by an
    engine that reports them."""

    def add_policy_turn(
        self, tokens: list[int], text: str, truncated: bool, logprobs: list[float] | None = None
    ) -> None:
        self.tokens += tokens
        self.turns.tool_tokens += [False] * len(tokens)
        self.turns.token_types += [0] * len(tokens)
        self.turns.transcript += text
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(tokens)
        self.last_text, self.truncated = text, truncated

    def add_tool_turn(self, ids: list[int], types: list[int], inputs, images: list, text: str) -> None:
        self.tokens += ids
        self.turns.tool_tokens += [True] * len(ids)
        self.turns.token_types += types
        self.logprobs += [0.0] * len(ids)
        if inputs is not None:
            self.turns.image_inputs.append(inputs)
            self.turns.shown += images
        self.turns.transcript += text

    def conversation(self, prompt: int) -> Conversation:
        return Conversation(prompt, self.tokens, self.turns)


class ToolEngine:
    """An engine whose rollouts may call tools: the inner engine samples every turn."""

    def __init__(
        self,
        inner,
        tools: dict[str, Tool],
        max_turns: int,
        turn_end_id: int,
        timeout_s: float = 10.0,
        memory_mb: int = 2048,
    ):
        self.inner, self.tools, self.max_turns = inner, tools, max_turns
        self.processor, self.device = inner.processor, inner.device
        # The inner engine's log-probs are stitched across turns (0 on tool tokens), so a vLLM engine's
        # mismatch with the trainer is measured and corrected on every policy token.
        self.name, self.own_logprobs = inner.name, inner.own_logprobs
        self.turn_end_id, self.writer = turn_end_id, ToolTurnWriter(inner.processor, turn_end_id)
        self.timeout_s, self.memory_mb = timeout_s, memory_mb

    def sample(
        self, prompts: PromptBatch, params: SamplingParams, prefixes: list[list[int]] | None = None
    ) -> Completions:
        first = self.inner.sample(prompts, params, prefixes)
        if prefixes is not None:  # a demonstration's prefix continued: one turn, as the inner engine gives it
            return first
        rows, owners = [], [row // params.group_size for row in range(len(first.texts))]
        for row, (owner, ids, mask, cut, text) in enumerate(
            zip(owners, first.ids, first.mask, first.truncated, first.texts)
        ):
            rows.append(_Row(list(prompts.samples[owner].load_images()), RowTurns(), [], "", False))
            kept = mask.bool()
            logprobs = first.logprobs[row][kept].tolist() if first.logprobs is not None else None
            rows[-1].add_policy_turn(ids[kept].tolist(), text, bool(cut), logprobs)
        self._more_turns(prompts, rows, owners, params)
        width = max(1, max(len(r.tokens) for r in rows))
        pad = self.processor.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask, logprobs = torch.zeros((len(rows), width)), torch.zeros((len(rows), width))
        for i, r in enumerate(rows):
            ids[i, : len(r.tokens)] = torch.tensor(r.tokens, dtype=torch.long)
            mask[i, : len(r.tokens)] = 1
            logprobs[i, : len(r.tokens)] = torch.tensor(r.logprobs)
        truncated = torch.tensor([r.truncated for r in rows])
        return Completions(
            ids,
            mask,
            truncated,
            [outside_calls(r.last_text) for r in rows],
            logprobs if self.own_logprobs else None,
            [r.turns for r in rows],
        )

    def _answer(self, row: _Row, budget: int) -> bool:
        """Run the call in the row's last turn and append the tool turn; False when the conversation
        has no room left for it and a reply (the row then ends, truncated)."""
        row.turns.calls += 1
        try:
            call = parse_call(row.last_text, self.tools)
            result = run_tool(self.tools[call.name], row.sample_images, call.arguments, self.timeout_s, self.memory_mb)
            ok = result.ok
            text, images = (result.output.text, list(result.output.images)) if ok else (f"error: {result.error}", [])
            row.turns.valid_calls += int(ok)
            row.turns.failures += int(result.raised)
        except CallError as exc:
            text, images = f"error: {exc}", []
        ids, types, image_inputs, turn_text = self.writer.encode(text, images)
        if len(row.tokens) + len(ids) >= budget:
            row.truncated = True
            return False
        row.add_tool_turn(ids, types, image_inputs, images, turn_text)
        return True

    def continue_conversations(
        self, prompts: PromptBatch, owners: list[int], prefixes: list[tuple[list[int], RowTurns]], params
    ) -> list[tuple[list[int], bool, RowTurns, str]]:
        """Per conversation, the policy's turns after a prefix (tokens and tool turns: a demonstration's
        calls and the tools' answers) of prompt `owners[i]`: (the tokens after the prefix, truncated,
        the whole conversation's turns, its final turn's text)."""
        rows = [
            _Row(list(prompts.samples[owner].load_images()), _copied(turns), list(tokens), "", False)
            for owner, (tokens, turns) in zip(owners, prefixes)
        ]
        live = [i for i, row in enumerate(rows) if len(row.tokens) < params.max_tokens]
        for i in set(range(len(rows))) - set(live):
            rows[i].truncated = True
        if live:
            self._next_turn(prompts, rows, owners, live, params)
        self._more_turns(prompts, rows, owners, params)
        return [
            (r.tokens[len(t) :], r.truncated, r.turns, outside_calls(r.last_text)) for r, (t, _) in zip(rows, prefixes)
        ]

    def _more_turns(self, prompts: PromptBatch, rows: list[_Row], owners: list[int], params: SamplingParams) -> None:
        """While a row's last turn calls a tool and turns remain: the tool's turn, then the policy's next."""
        while True:
            calling = [
                i
                for i, r in enumerate(rows)
                if r.turns.turns < self.max_turns and not r.truncated and has_call(r.last_text)
            ]
            live = [i for i in calling if self._answer(rows[i], params.max_tokens)]
            if not live:
                return
            self._next_turn(prompts, rows, owners, live, params)

    def _next_turn(
        self, prompts: PromptBatch, rows: list[_Row], owners: list[int], live: list[int], params: SamplingParams
    ) -> None:
        """One more assistant turn for each row in `live` (of prompt owners[i]), sampled from its
        conversation so far."""
        conversations = [rows[i].conversation(owners[i]) for i in live]
        room = [params.max_tokens - len(rows[i].tokens) for i in live]
        done = self.inner.sample_conversations(
            prompts, conversations, replace(params, group_size=1, max_tokens=max(room))
        )
        for n, (i, space) in enumerate(zip(live, room)):
            kept = done.mask[n].bool()
            tokens, text = done.ids[n][kept].tolist(), done.texts[n]
            logprobs = done.logprobs[n][kept].tolist()[:space] if done.logprobs is not None else None
            over = len(tokens) > space
            if over:
                tokens, text = tokens[:space], self.processor.tokenizer.decode(tokens[:space], skip_special_tokens=True)
            rows[i].add_policy_turn(tokens, text, bool(done.truncated[n]) or over, logprobs)
            rows[i].turns.turns += 1

    def demonstration(self, sample, answer: str | None) -> tuple[list[int], RowTurns]:
        """A tool-using demonstration of `sample`: each of its `calls` as the policy would write it, the
        tool's real answer, then `answer` (every turn ending with the turn-end token; None: the calls
        and the tools' turns only, a prefix the policy continues). Tokens and turns."""
        tokenizer = self.processor.tokenizer
        row = _Row(list(sample.load_images()), RowTurns(turns=0), [], "", False)
        for call in sample.calls:
            text = write_call(call)
            row.add_policy_turn(turn_tokens(tokenizer, text, self.turn_end_id), text, False)
            row.turns.turns += 1
            if not self._answer(row, budget=10**9):
                raise ValueError(f"{sample.id}: the demonstration's call {call} cannot be answered")
            if row.turns.valid_calls < row.turns.calls:
                raise ValueError(f"{sample.id}: the demonstration's call {call} fails: {row.turns.transcript}")
        if answer is not None:
            row.add_policy_turn(turn_tokens(tokenizer, answer, self.turn_end_id), answer, False)
            row.turns.turns += 1
        return row.tokens, row.turns

    def sample_conversations(self, prompts: PromptBatch, conversations: list[Conversation], params: SamplingParams):
        return self.inner.sample_conversations(prompts, conversations, params)

    def submit(self, prompts: PromptBatch, params: SamplingParams):
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(self.sample(prompts, params))
        return future

    def evaluator(self) -> ToolEngine:
        return ToolEngine(
            self.inner.evaluator(), self.tools, self.max_turns, self.turn_end_id, self.timeout_s, self.memory_mb
        )

    def update_weights(self, model) -> float:
        return self.inner.update_weights(model)

    def close(self) -> None:
        self.inner.close()


def _copied(turns: RowTurns) -> RowTurns:
    """A copy whose lists grow apart from the original's."""
    return replace(
        turns,
        tool_tokens=list(turns.tool_tokens),
        token_types=list(turns.token_types),
        image_inputs=list(turns.image_inputs),
        shown=list(turns.shown),
    )
