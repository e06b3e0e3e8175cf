"""Model-family adapters, looked up by family name or by a model's `config.model_type`.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE have adapters with shared-prefix passes; Gemma 3,
SmolVLM and LLaVA-OneVision have ones with per-row passes (their processor class, turn end and
placeholders declared; tiny builders in `models/tiny/`); any other model type gets the generic
adapter (per-row passes).
A new family is one module with a `FamilyAdapter` subclass, mostly class attributes, registered
here or by a plug-in with `register_family`.
"""

from __future__ import annotations

from ...errors import ConfigError
from ...registry import Registry
from .base import FamilyAdapter, base_model
from .gemma3 import Gemma3Adapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter, Qwen3VLMoeAdapter
from .smolvlm import SmolVLMAdapter

FAMILIES: Registry[FamilyAdapter] = Registry("model family")
GENERIC = FamilyAdapter()


def register_family(adapter: FamilyAdapter) -> None:
    FAMILIES.register(adapter.family, adapter)


for _adapter in (
    Qwen2VLAdapter(),
    Qwen2_5_VLAdapter(),
    Qwen3VLAdapter(),
    Qwen3VLMoeAdapter(),
    Gemma3Adapter(),
    SmolVLMAdapter(),
    LlavaOnevisionAdapter(),
):
    register_family(_adapter)


def family_named(name: str) -> FamilyAdapter:
    return FAMILIES.get(name)


def adapter_for_type(model_type: str) -> FamilyAdapter:
    """The adapter serving `model_type`; the generic one when no family claims it."""
    for _, adapter in FAMILIES.items():
        if model_type in adapter.model_types:
            return adapter
    return GENERIC


def adapter_for(model) -> FamilyAdapter:
    """The adapter of a loaded model (under a peft wrapper, of its base)."""
    return adapter_for_type(base_model(model).config.model_type)


def refuse_video(adapter: FamilyAdapter, where: str) -> None:
    """Stops with one line when `adapter`'s family cannot take video; `where` says what holds one."""
    if adapter.supports_video:
        return
    takers = ", ".join(name for name, other in FAMILIES.items() if other.supports_video)
    raise ConfigError(f"{where}: the {adapter.family} family cannot take video; the families that take it: {takers}")


__all__ = [
    "FAMILIES",
    "FamilyAdapter",
    "adapter_for",
    "adapter_for_type",
    "base_model",
    "family_named",
    "refuse_video",
    "register_family",
]
