"""Loading the policy, the frozen reference and the processor.

A model is named by a local folder, a hub id, or a registered name: `tiny-qwen2-vl` and
`tiny-qwen2.5-vl` are built on the spot; the counting lab registers its shipped base models.
Weights load from safetensors only; a checkpoint's own code runs only with trust_remote_code.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForImageTextToText

from .processors import load_processor

# name -> callable returning a local folder to load, or a (model, processor) pair built in memory.
_REGISTRY: dict[str, Callable[[], object]] = {}


def register_model(name: str, factory: Callable[[], object]) -> None:
    _REGISTRY[name] = factory


def registered_models() -> list[str]:
    _register_builtin()
    return sorted(_REGISTRY)


def _register_builtin() -> None:
    if "tiny-qwen2-vl" in _REGISTRY:
        return
    from . import tiny

    register_model("tiny-qwen2-vl", lambda: tiny.build_tiny("qwen2-vl"))
    register_model("tiny-qwen2.5-vl", lambda: tiny.build_tiny("qwen2.5-vl"))
    try:
        from .lab import models as lab_models
    except ImportError:
        return
    lab_models.register(register_model)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is visible; use device=cpu")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_model_and_processor(name: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False,
                             load_in_4bit: bool = False):
    """The policy on `device`, and its processor; `load_in_4bit` quantizes the language model (QLoRA)."""
    _register_builtin()
    if name in _REGISTRY:
        made = _REGISTRY[name]()
        if isinstance(made, tuple):
            model, processor = made
            if not load_in_4bit:
                return model.to(device=device, dtype=dtype), processor
            with tempfile.TemporaryDirectory() as folder:  # quantization happens while loading
                model.save_pretrained(folder)
                processor.save_pretrained(folder)
                return load_model_and_processor(folder, device, dtype, trust_remote_code, load_in_4bit)
        name = str(made)
    path = Path(name)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a saved model folder")
    options = {"quantization_config": four_bit_config(dtype), "device_map": {"": device}} if load_in_4bit else {}
    model = AutoModelForImageTextToText.from_pretrained(
        name, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **options)
    if not load_in_4bit:
        model = model.to(device)
    elif device.type == "cpu":
        # bitsandbytes repacks 4-bit weights for CPU inference the first time they run in eval mode;
        # training forwards then fail on that layout (in-place bias add), and GRPO alternates the two.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    processor = load_processor(name, model.config.model_type, trust_remote_code)
    return model, processor


def four_bit_config(compute_dtype: torch.dtype):
    """QLoRA's quantization (NF4, double quantization); vision tower and output head left in full precision."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("lora.load_in_4bit=true needs bitsandbytes: pip install 'vlm-grpo[qlora]'") from exc
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype,
                              llm_int8_skip_modules=["model.visual", "visual", "lm_head"])


# The language model's projections; the pattern keeps Qwen2.5-VL's vision MLP (same names) out.
LANGUAGE_PROJECTIONS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def apply_lora(model, settings):
    """Wrap the policy with LoRA adapters; only adapter weights stay trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise RuntimeError("lora.enabled=true needs peft: pip install 'vlm-grpo[lora]'") from exc
    if getattr(model, "is_quantized", False):
        from peft import prepare_model_for_kbit_training

        # Norms and other unquantized weights in fp32 for stable training, as QLoRA prescribes.
        checkpointing = getattr(model, "is_activation_checkpointing", getattr(model, "is_gradient_checkpointing", False))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    targets = settings.target_modules or LANGUAGE_PROJECTIONS
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets)
    return get_peft_model(model, config)


def freeze_vision(model) -> None:
    base = unwrap(model)
    vision = getattr(base.model, "visual", None)
    if vision is None:
        raise ValueError(f"freeze_vision_tower: model type {base.config.model_type!r} has no `visual` module")
    vision.requires_grad_(False)


def unwrap(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_weights(model, folder: Path) -> None:
    """Put a checkpoint's weights into `model` in place (the adapter only, under peft)."""
    if hasattr(model, "get_base_model"):
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(folder / "adapter" / "adapter_model.safetensors"))
        return
    # from_pretrained maps the saved key names back to this model's; a raw state dict would not.
    saved = type(model).from_pretrained(folder, dtype=model.dtype, use_safetensors=True)
    model.load_state_dict(saved.state_dict())


def save_model(model, folder: Path, merged: bool, state_dict: dict | None = None) -> None:
    """HF-format safetensors; with adapters, the adapter and (if asked) merged full weights.

    `state_dict` (the gathered weights of a sharded model) is written instead of the model's own."""
    if not hasattr(model, "get_base_model"):
        from .sharding import plain_classes

        with plain_classes(model):
            model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
        return
    model.save_pretrained(folder / "adapter", safe_serialization=True)
    if merged:
        merged_copy(model).save_pretrained(folder, safe_serialization=True)


def merged_copy(model):
    """The policy as one plain model: adapters folded into the weights. Under 4-bit base weights,
    the base is dequantized first and the adapters added in full precision, which is the function
    the policy computes (merging into the 4-bit weights would quantize the update away)."""
    if not getattr(unwrap(model), "is_quantized", False):
        return copy.deepcopy(model).merge_and_unload()
    deltas = {name: module.get_delta_weight(module.active_adapters[0])
              for name, module in unwrap(model).named_modules() if hasattr(module, "get_delta_weight")}
    plain = copy.deepcopy(model).unload().dequantize()
    for name, delta in deltas.items():
        weight = plain.get_submodule(name).weight
        weight.data += delta.to(weight.dtype)
    return plain


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A reference policy: same weights, no gradients, eval mode."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


