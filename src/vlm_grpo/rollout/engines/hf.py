"""The `hf` engine: the policy samples itself, in the trainer's process, with the sampler of
`rollout/generation.py` (prefix sharing where the family supports it, transformers' `generate`
otherwise). Its log-probs are the trainer's own, so it reports none, and it has no weights to
receive: it samples with the model being trained."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future

from ..batch import Conversation, PromptBatch, conversation_batch
from ..generation import generate, with_prefixes
from .base import Completions, SamplingParams


class HFEngine:
    name = "hf"
    own_logprobs = False

    def __init__(self, model, processor, sharing: str = "auto", context: Callable | None = None):
        """`context` is entered around every call (the trainer's: gather sharded weights, autocast)."""
        self.model, self.processor, self.sharing = model, processor, sharing
        self.device = next(model.parameters()).device
        self.context = context or contextlib.nullcontext

    def sample(
        self, prompts: PromptBatch, params: SamplingParams, prefixes: list[list[int]] | None = None
    ) -> Completions:
        if prefixes is not None:
            inputs = with_prefixes(prompts.inputs, prefixes, self.processor.tokenizer.pad_token_id)
            prompts = PromptBatch(prompts.samples, inputs, prompts.image_counts, prompts.texts)
        with self.context():
            ids, mask, truncated, texts = generate(
                self.model,
                self.processor,
                prompts,
                params.group_size,
                params.max_tokens,
                params.temperature,
                params.top_p,
                params.top_k,
                self.sharing,
            )
        return Completions(ids, mask, truncated, texts)

    def sample_conversations(
        self, prompts: PromptBatch, conversations: list[Conversation], params: SamplingParams
    ) -> Completions:
        batch = conversation_batch(prompts, conversations, self.processor.tokenizer.pad_token_id)
        return self.sample(batch, params)

    def submit(self, prompts: PromptBatch, params: SamplingParams) -> Future:
        """Samples now (the policy cannot decode while it trains in the same process)."""
        future: Future = Future()
        future.set_result(self.sample(prompts, params))
        return future

    def evaluator(self) -> HFEngine:
        """Greedy evaluation samples with the policy as `rollout.generate` picks (prefix sharing where
        exact); the caller enters the trainer's context on every rank itself (gathering is a collective)."""
        return HFEngine(self.model, self.processor)

    def update_weights(self, model) -> float:
        return 0.0  # it samples with the model being trained

    def close(self) -> None:
        pass
