"""Rollout engines, by name: `hf` (the policy samples itself; the default) and `vllm` (a vLLM server
beside the trainer). A new engine is one module with a factory `(model, processor, options) ->
Engine`, registered here or by a plug-in with `register_engine`; an engine with settings of its own
registers their dataclass with it, which makes them the config section of its name (`vllm.*`)."""

from __future__ import annotations

from collections.abc import Callable

from ...config_checks import check_named
from ...config_sections import register_section
from ...registry import Registry
from .base import Completions, Engine, EngineError, EngineOptions, SamplingParams
from .hf import HFEngine
from .vllm_engine import VLLMConfig

ENGINES: Registry[Callable[..., Engine]] = Registry("rollout engine")


def _hf(model, processor, options: EngineOptions) -> Engine:
    return HFEngine(model, processor, options.sharing, options.context)


def _vllm(model, processor, options) -> Engine:
    from .vllm_engine import VLLMEngine  # the client only; vLLM itself runs in its own environment

    return VLLMEngine(model, processor, options)


def register_engine(
    name: str, factory: Callable[..., Engine], settings: type | None = None, replace: bool = False
) -> None:
    """Register an engine factory; `settings`, a dataclass, becomes the config section `name` and reaches
    the factory as `EngineOptions.settings`."""
    ENGINES.register(name, factory, replace)
    if settings is not None:
        register_section(name, settings, replace)


register_engine("hf", _hf)
register_engine("vllm", _vllm, VLLMConfig)
check_named("rollout_engine", ENGINES)


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
    "VLLMConfig",
    "make_engine",
    "register_engine",
]
