"""Rollout: encoding prompts, sampling G completions per prompt, log-probs of completions, and the
typed containers of one step (PromptBatch, Rollout, StepBatch, MicroBatch)."""

from .batch import MicroBatch, PromptBatch, Rollout, StepBatch, padding_share, take_groups
from .engines import ENGINES, Completions, Engine, EngineError, HFEngine, SamplingParams, make_engine, register_engine
from .generation import continue_prefixes, encode_prompts, generate, mask_after_end, pick_tokens
from .logprobs import completion_logprobs

__all__ = [
    "ENGINES",
    "Completions",
    "Engine",
    "EngineError",
    "HFEngine",
    "SamplingParams",
    "make_engine",
    "register_engine",
    "MicroBatch",
    "PromptBatch",
    "Rollout",
    "StepBatch",
    "completion_logprobs",
    "continue_prefixes",
    "encode_prompts",
    "generate",
    "mask_after_end",
    "padding_share",
    "pick_tokens",
    "take_groups",
]
