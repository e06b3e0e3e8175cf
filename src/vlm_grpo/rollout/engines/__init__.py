"""Rollout engines, by name: `hf` (the policy samples itself; the default) and `vllm` (a vLLM server
beside the trainer). A new engine is one module with a factory `(model, processor, options) ->
Engine`, registered here or by a plug-in with `register_engine`; an engine with settings of its own
registers their dataclass with it, which makes them the config section of its name (`vllm.*`)."""

from __future__ import annotations

from collections.abc import Callable

from ...config_checks import check_named, register_check
from ...config_sections import register_section
from ...errors import ConfigError
from ...registry import Registry
from .base import Completions, Engine, EngineError, EngineOptions, EngineTraits, SamplingParams
from .hf import HFEngine
from .vllm_engine import VLLMConfig

ENGINES: Registry[Callable[..., Engine]] = Registry("rollout engine")
ENGINE_TRAITS: Registry[EngineTraits] = Registry("rollout engine")


def _hf(model, processor, options: EngineOptions) -> Engine:
    return HFEngine(model, processor, options.sharing, options.context)


def _vllm(model, processor, options) -> Engine:
    from .vllm_engine import VLLMEngine  # the client only; vLLM itself runs in its own environment

    return VLLMEngine(model, processor, options)


def register_engine(
    name: str,
    factory: Callable[..., Engine],
    settings: type | None = None,
    traits: EngineTraits | None = None,
    replace: bool = False,
) -> None:
    """Register an engine factory and what it can do (None: an in-process engine that takes any weights
    and any number of processes); `settings`, a dataclass, becomes the config section `name` and reaches
    the factory as `EngineOptions.settings`."""
    ENGINES.register(name, factory, replace)
    ENGINE_TRAITS.register(name, traits or EngineTraits(), replace)
    if settings is not None:
        register_section(name, settings, replace)


def _check_traits(cfg, need) -> None:
    """What the run asks of its engine, against what the engine declared."""
    if cfg.rollout_engine not in ENGINES:
        return  # check_named reports it
    traits, name = ENGINE_TRAITS.get(cfg.rollout_engine), f"rollout_engine={cfg.rollout_engine}"
    need(
        traits.separate_process or not cfg.overlap_rollout,
        f"overlap_rollout=true needs an engine in another process: {name} samples with the model being trained",
    )
    need(
        traits.quantized_weights or not cfg.lora.load_in_4bit,
        f"{name} cannot take 4-bit (QLoRA) weights: set lora.load_in_4bit=false",
    )


def check_processes(name: str, world_size: int) -> None:
    """At start, once the number of trainer processes is known: an engine that serves one refuses more."""
    if world_size > 1 and not ENGINE_TRAITS.get(name).several_processes:
        raise ConfigError(
            f"rollout_engine={name} serves one trainer process ({world_size} were started): "
            "train on one process, or use rollout_engine=hf"
        )


register_engine("hf", _hf)
register_engine("vllm", _vllm, VLLMConfig, EngineTraits(separate_process=True, quantized_weights=False))
check_named("rollout_engine", ENGINES)
register_check("engine traits", _check_traits)


def make_engine(name: str, model, processor, options: EngineOptions | None = None) -> Engine:
    options = options or EngineOptions()
    return ENGINES.get(name)(model, processor, options)


__all__ = [
    "ENGINES",
    "ENGINE_TRAITS",
    "Completions",
    "Engine",
    "EngineError",
    "EngineOptions",
    "EngineTraits",
    "HFEngine",
    "SamplingParams",
    "VLLMConfig",
    "check_processes",
    "make_engine",
    "register_engine",
]
