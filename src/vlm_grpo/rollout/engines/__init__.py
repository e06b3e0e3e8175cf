"""Rollout engines, by name: `hf` (the policy samples itself; the default) and `vllm` (a vLLM server
beside the trainer). A new engine is one module with a factory `(model, processor, options) ->
Engine`, registered here or by a plug-in with `register_engine`."""

from __future__ import annotations

from collections.abc import Callable

from ...registry import Registry
from .base import Completions, Engine, EngineError, EngineOptions, SamplingParams
from .hf import HFEngine

ENGINES: Registry[Callable[..., Engine]] = Registry("rollout engine")


def _hf(model, processor, options: EngineOptions) -> Engine:
    return HFEngine(model, processor, options.sharing, options.context)


def _vllm(model, processor, options) -> Engine:
    from .vllm_engine import VLLMEngine  # the client only; vLLM itself runs in its own environment

    return VLLMEngine(model, processor, options)


ENGINES.register("hf", _hf)
ENGINES.register("vllm", _vllm)


def register_engine(name: str, factory: Callable[..., Engine], replace: bool = False) -> None:
    ENGINES.register(name, factory, replace)


def make_engine(name: str, model, processor, options: EngineOptions | None = None) -> Engine:
    options = options or EngineOptions()
    return ENGINES.get(name)(model, processor, options)


__all__ = [
    "ENGINES",
    "Completions",
    "Engine",
    "EngineError",
    "EngineOptions",
    "HFEngine",
    "SamplingParams",
    "make_engine",
    "register_engine",
]
