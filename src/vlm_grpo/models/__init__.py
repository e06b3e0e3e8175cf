"""Models: loading the policy and its processor, named models, family adapters, tiny builders.

`tiny-<family>` names build a tiny random-weight model of each family that has a tiny builder.
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


def _tiny(family: str):
    def build():
        from .tiny import build_tiny

        return build_tiny(family)

    return build


for _family in ("qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe", "gemma3", "smolvlm", "llava-onevision"):
    register_model(f"tiny-{_family}", _tiny(_family))

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
