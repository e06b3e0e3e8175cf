"""The policy's weights as an engine with weights of its own takes them: under the plain model's HF names,
LoRA deltas merged into copies (the trainer's weights untouched), tied tensors once, and a standard HF
folder an engine can load. Any engine that holds a copy of the policy uses these."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...models.families import adapter_for, base_model
from .base import EngineError


def policy_state_dict(model) -> dict[str, torch.Tensor]:
    """The policy's weights under the plain model's HF names, one name per tensor (`untied`); LoRA
    deltas added to copies of the base weights (the trainer's own weights are not touched, so no
    merge/unmerge rounding creeps in)."""
    if not hasattr(model, "get_base_model"):
        return {name: whole(t.detach()).contiguous() for name, t in untied(model.state_dict()).items()}
    base = base_model(model)
    if getattr(base, "is_quantized", False):
        raise EngineError("the vllm engine cannot take 4-bit (QLoRA) weights: train in 16 or 32 bit with LoRA")
    out = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            weight = module.base_layer.weight.detach()
            out[f"{name}.weight"] = weight + module.get_delta_weight(module.active_adapters[0]).to(weight.dtype)
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        plain = name.replace(".base_layer.", ".")
        out.setdefault(plain, tensor.detach())
    return {name: whole(t).contiguous() for name, t in untied(out).items()}


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor FSDP2 shards (a DTensor) gathered whole on this process: a collective, so every process
    reads the policy's tensors in the same order; any other tensor as it is."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor


def untied(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first name of each tensor only: a tied LM head (Qwen2-VL-2B and Qwen2.5-VL-3B tie it to the
    embedding) is the embedding's storage, which safetensors refuses to write twice and vLLM ties
    again when it loads the embedding."""
    seen, out = set(), {}
    for name, tensor in tensors.items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a shard of FSDP2's: its own storage
        where = (local.device, local.dtype, local.untyped_storage().data_ptr(), local.storage_offset())
        key = (*where, tuple(local.shape), local.stride())
        if tensor.numel() == 0 or key not in seen:  # empty tensors all sit at address 0: keep each
            seen.add(key)
            out[name] = tensor
    return out


def export_folder(model, processor, folder: Path, tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """A standard HF folder vLLM can load: merged weights (`tensors`, read already, or the policy's own), the
    standard processor class (image-only processors save under its name), and the family's video
    processor config beside the image processor's (vLLM's processing builds both for the families that
    have one)."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = base_model(model) if hasattr(model, "get_base_model") else model
    state = tensors if tensors is not None else policy_state_dict(model)
    plain.save_pretrained(folder, state_dict=state, safe_serialization=True)
    processor.save_pretrained(folder)
    path = folder / "processor_config.json"
    video = adapter_for(model).video_processor_type
    if video and path.is_file():
        config = json.loads(path.read_text())
        if "video_processor" not in config and "image_processor" in config:
            settings = {k: v for k, v in config["image_processor"].items() if k != "image_processor_type"}
            config["video_processor"] = {**settings, "video_processor_type": video}
            path.write_text(json.dumps(config, indent=2))
    return folder
