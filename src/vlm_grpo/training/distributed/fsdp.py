"""Fully sharded data parallelism (PyTorch FSDP2) for the trainer.

`fsdp=full_shard` leaves each rank 1/N of every parameter, gradient and Adam moment, and gathers
a layer's parameters only while it runs (ZeRO stage 3's partitioning). `fsdp=shard_grad_op`
keeps a layer's parameters gathered from its forward to its backward (ZeRO stage 2's trade: more
memory, fewer all-gathers). The sharding units are the blocks the model itself declares
unsplittable (`_no_split_modules`: decoder layers, vision blocks), then the whole model.

Gradients are averaged by FSDP's reduce-scatter in the backward pass; it accepts the two
forwards (prompt prefill, then completions) that the shared-prefix pass runs before one backward.

Generation and evaluation run with every parameter gathered (`gathered`): ranks sample
completions of different lengths, so their decode loops run different numbers of forwards, and a
sharded forward is a collective that every rank must join. The full weights exist only for the
rollout and are freed before the update.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

MODES = ("none", "full_shard", "shard_grad_op")


def _fsdp_modules(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def shard(model: torch.nn.Module, mode: str, mixed_precision=None) -> torch.nn.Module:
    """Shard `model` in place over the default process group, one unit per unsplittable block;
    `mixed_precision` is an FSDP2 MixedPrecisionPolicy (bf16-mixed) or None (compute in the weights' dtype)."""
    from torch.distributed.fsdp import fully_shard

    if mode not in MODES[1:]:
        raise ValueError(f"fsdp={mode!r}: use one of {', '.join(MODES)}")
    # Logits come back as a slice (logits_to_keep); nothing here modifies them in place while
    # gradients are recorded (tests compare sharded updates with one process), so FSDP's warning is noise.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    reshard = mode == "full_shard"
    unit_names = set(getattr(model, "_no_split_modules", None) or [])
    if not unit_names:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules: no FSDP units to shard by")
    units = [m for m in model.modules() if type(m).__name__ in unit_names]
    options = {"mp_policy": mixed_precision} if mixed_precision is not None else {}
    for unit in units:
        fully_shard(unit, reshard_after_forward=reshard, **options)
    fully_shard(model, reshard_after_forward=reshard, **options)
    return model


@contextmanager
def gathered(model: torch.nn.Module, mode: str) -> Iterator[None]:
    """Every parameter gathered on every rank for the block: forwards inside need no collective.

    Entering and leaving are collectives (all ranks must enter); a no-op for an unsharded model.
    """
    modules = _fsdp_modules(model)
    if not modules:
        yield
        return
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
        for module in modules:  # back to the sharding mode's own policy
            module.set_reshard_after_forward(mode == "full_shard", recurse=False)


@contextmanager
def plain_classes(model: torch.nn.Module) -> Iterator[None]:
    """FSDP2 swaps each sharded module's class for an `FSDP<Name>` subclass; transformers finds a
    model's checkpoint key renamings by class name, so saving runs under the original classes."""
    from torch.distributed.fsdp import FSDPModule

    swapped = []
    for module in _fsdp_modules(model):
        swapped.append((module, type(module)))
        module.__class__ = next(c for c in type(module).__mro__[1:] if not issubclass(c, FSDPModule))
    try:
        yield
    finally:
        for module, cls in swapped:
            module.__class__ = cls


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU, on rank 0 (empty elsewhere). A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_checkpoint_weights(model: torch.nn.Module, folder) -> None:
    """Put a saved HF checkpoint into the shards (every rank reads it). A collective.

    Read through from_pretrained, which maps the saved key names to the model's own."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    with plain_classes(model):
        cls, dtype = type(model), model.dtype
    saved = cls.from_pretrained(folder, dtype=dtype, use_safetensors=True)
    set_model_state_dict(model, saved.state_dict(), options=StateDictOptions(full_state_dict=True))


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state with full (unsharded) tensors, keyed by parameter name. A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def norm_value(norm) -> float:
    """clip_grad_norm_ returns a DTensor for sharded gradients: its full value."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
