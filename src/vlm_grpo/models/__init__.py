"""Models: loading the policy and its processor, named models, family adapters, tiny builders.

`tiny-<family>` names build a tiny random-weight model of each family with a tiny builder
(`loading.model_factory` reads them from FAMILIES: a plug-in family gets its name too).
"""

from __future__ import annotations

from .families import FAMILIES, FamilyAdapter, adapter_for, adapter_for_type, base_model, register_family
from .loading import (
    MODELS,
    apply_lora,
    check_model_name,
    freeze_vision,
    frozen_copy,
    load_for_inference,
    load_model_and_processor,
    load_weights,
    merged_copy,
    pick_device,
    pick_dtype,
    register_model,
    registered_models,
    save_model,
)

__all__ = [
    "FAMILIES",
    "MODELS",
    "FamilyAdapter",
    "adapter_for",
    "adapter_for_type",
    "apply_lora",
    "base_model",
    "check_model_name",
    "load_for_inference",
    "freeze_vision",
    "frozen_copy",
    "load_model_and_processor",
    "load_weights",
    "merged_copy",
    "pick_device",
    "pick_dtype",
    "register_family",
    "register_model",
    "registered_models",
    "save_model",
]
