"""Loading the policy, the frozen reference and the processor.

A model is named by a local folder, a hub id, or a registered name: `tiny-<family>` models are
built on the spot; plug-ins (the counting lab) register their own names with `register_model`.
Weights load from safetensors only; a checkpoint's own code runs only with trust_remote_code.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText

from ..registry import Registry
from .compat import activation_checkpointing
from .families import FAMILIES, adapter_for_type, base_model

# name -> callable returning a local folder to load, or a (model, processor) pair built in memory.
MODELS: Registry[Callable[[], object]] = Registry("model")


def register_model(name: str, factory: Callable[[], object]) -> None:
    """A model name users can give as `model=`; the factory runs only when the name is loaded."""
    MODELS.register(name, factory)


def registered_models() -> list[str]:
    """Registered names, and `tiny-<family>` for every family (a plug-in's too) with a tiny builder
    (`models/tiny/`)."""
    from .tiny import TINY_BUILDERS  # on first use: tiny models import the tasks, whose plug-ins import models

    tiny = [f"tiny-{family}" for family in FAMILIES.names() if family in TINY_BUILDERS]
    return sorted({*MODELS.names(), *tiny})


def model_factory(name: str) -> Callable[[], object] | None:
    """What builds the named model: a registered factory or a family's tiny builder; None otherwise."""
    if name in MODELS:
        return MODELS.get(name)
    family = name.removeprefix("tiny-")
    if not name.startswith("tiny-") or family not in FAMILIES:
        return None
    from .tiny import TINY_BUILDERS, build_tiny

    if family in TINY_BUILDERS:
        return lambda: build_tiny(family)
    return None


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


def load_model_and_processor(
    name: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False, load_in_4bit: bool = False
):
    """The policy on `device`, and its processor; `load_in_4bit` quantizes the language model (QLoRA)."""
    factory = model_factory(name)
    if factory is not None:
        made = factory()
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
    if not path.exists() and not _hub_shaped(name):
        raise FileNotFoundError(_missing_model(name))
    options = {"quantization_config": four_bit_config(dtype), "device_map": {"": device}} if load_in_4bit else {}
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            name, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True, **options
        )
    except OSError as exc:
        if path.exists():
            raise
        # Not here and not served by the hub (offline, no such repo, no safetensors): the first line
        # of transformers' multi-line reason is the hub's part of ours.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(_missing_model(name, first)) from exc
    if not load_in_4bit:
        model = model.to(device)
    elif device.type == "cpu":
        # bitsandbytes repacks 4-bit weights for CPU inference the first time they run in eval mode;
        # training forwards then fail on that layout (in-place bias add), and GRPO alternates the two.
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    processor = adapter_for_type(model.config.model_type).load_processor(
        name, model.config.model_type, trust_remote_code
    )
    return model, processor


def four_bit_config(compute_dtype: torch.dtype):
    """QLoRA's quantization (NF4, double quantization); vision tower and output head left in full precision."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("lora.load_in_4bit=true needs bitsandbytes: pip install 'vlm-grpo[qlora]'") from exc
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=["model.visual", "visual", "lm_head"],
    )


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
        checkpointing = activation_checkpointing(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    targets = settings.target_modules or LANGUAGE_PROJECTIONS
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets)
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning about
        # peft's code, which nothing in the user's run can change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
        return get_peft_model(model, config)


# What the families call their vision encoder: Qwen `visual`, Gemma 3 / LLaVA `vision_tower`, SmolVLM `vision_model`.
VISION_TOWERS = ("visual", "vision_tower", "vision_model")


def freeze_vision(model) -> None:
    base = base_model(model)
    vision = next((getattr(base.model, name) for name in VISION_TOWERS if hasattr(base.model, name)), None)
    if vision is None:
        raise ValueError(
            f"freeze_vision_tower: model type {base.config.model_type!r} has none of the vision modules "
            f"{', '.join(VISION_TOWERS)}"
        )
    vision.requires_grad_(False)


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
        model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
        return
    model.save_pretrained(folder / "adapter", safe_serialization=True)
    if merged:
        merged_copy(model).save_pretrained(folder, safe_serialization=True)


def merged_copy(model):
    """The policy as one plain model: adapters folded into the weights. Under 4-bit base weights,
    the base is dequantized first and the adapters added in full precision, which is the function
    the policy computes (merging into the 4-bit weights would quantize the update away)."""
    if not getattr(base_model(model), "is_quantized", False):
        return copy.deepcopy(model).merge_and_unload()
    deltas = {
        name: module.get_delta_weight(module.active_adapters[0])
        for name, module in base_model(model).named_modules()
        if hasattr(module, "get_delta_weight")
    }
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


def check_model_name(name: str) -> None:
    """Fail fast on a name that is neither registered, a saved folder, nor a hub id."""
    path = Path(name)
    if model_factory(name) is not None or (path / "config.json").is_file():
        return
    if path.exists():
        raise ValueError(f"model folder {path} has no config.json: it is not a saved model")
    if not _hub_shaped(name):
        raise ValueError(_missing_model(name))


def _hub_shaped(name: str) -> bool:
    """Whether `name` could be a hub id (org/name); anything else that is not here is a wrong path or name."""
    return name.count("/") == 1 and not name.startswith((".", "/"))


def _missing_model(name: str, hub_error: str | None = None) -> str:
    """One line for a model that is nowhere: what it is not, where the names are, and what a hub id
    needs, or (`hub_error`) why the hub did not serve it."""
    where = f"unknown model {name!r}: neither a local folder nor a registered name (vlm-grpo models lists them)"
    if hub_error is None:
        return f"{where}; hub ids (org/name) need network"
    return f"{where}, and the hub did not serve it: {hub_error}"


def load_for_inference(name: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """Model (eval mode) and processor; loading failures become one-line ValueErrors."""
    check_model_name(name)
    dev = pick_device(device)
    try:
        model, processor = load_model_and_processor(name, dev, pick_dtype(dtype, dev), trust_remote_code)
    except (OSError, ValueError) as exc:  # hub ids offline, bad folders, unsupported architectures
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot load model {name!r}: {first}") from exc
    return model.eval(), processor
