"""Numerical precision of a run: which dtype the weights live in, which dtype forwards compute in,
and how the optimizer keeps small updates from rounding away.

Why this exists: AdamW at the study's learning rate (1e-5) moves a weight by about 1e-5 per
update, while bfloat16 keeps 8 bits of mantissa, so a weight of 0.02 has neighbours 1.2e-4 apart.
Updating bfloat16 weights in place therefore drops most updates (measured on the counting lab:
sampled number-present rate 0.04 after 40 steps against 0.73 in float32). Every setting here
keeps float32 somewhere the updates accumulate:

- `fp32`: float32 weights, optimizer state and compute.
- `bf16-mixed`: float32 weights and optimizer state; sampling and log-prob passes run under
  bfloat16 autocast. Under FSDP2, its MixedPrecisionPolicy (bf16 compute, fp32 gradient reduction).
- `bf16-true`: bfloat16 weights (half the weight memory); the optimizer holds float32 master
  copies, steps them, and copies them back rounded (`MasterWeightAdamW`). Under DeepSpeed ZeRO,
  its own bf16 section does the same. Not with FSDP: there bf16-mixed already shards fp32 masters.
- `fp16-mixed`: float32 weights, float16 autocast, the loss scaled by torch.amp.GradScaler so
  small gradients do not underflow. Single process or replicated only.
- `auto`: bf16-mixed on CUDA, fp32 elsewhere.

The older `dtype` key is folded in: float32 -> fp32, bfloat16 -> bf16-true (the same bfloat16
weights in memory, now with master weights), float16 -> fp16-mixed.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch

LOW = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Policy:
    name: str
    weights: torch.dtype
    """Dtype the trainable policy's weights are loaded and held in."""
    compute: torch.dtype | None
    """Autocast dtype of sampling and log-prob passes (None: no autocast, the weights' own dtype)."""
    master_weights: bool
    """The optimizer steps float32 copies of low-precision weights."""
    loss_scaling: bool
    """Gradients flow through a GradScaler (float16 underflows without it)."""
    reference: torch.dtype
    """Dtype of the frozen reference model: it is never updated, so bfloat16 loses nothing there."""


_POLICIES = {
    "fp32": Policy("fp32", torch.float32, None, False, False, torch.float32),
    "bf16-mixed": Policy("bf16-mixed", torch.float32, torch.bfloat16, False, False, torch.bfloat16),
    "bf16-true": Policy("bf16-true", torch.bfloat16, None, True, False, torch.bfloat16),
    "fp16-mixed": Policy("fp16-mixed", torch.float32, torch.float16, False, True, torch.float32),
}


def resolve(precision: str, device: torch.device) -> Policy:
    """The run's Policy; `auto` is bf16-mixed on CUDA (tensor cores, half the activation memory)
    and fp32 elsewhere (CPU bfloat16 matmuls are slower than float32 ones on most CPUs)."""
    name = precision
    if name == "auto":
        name = "bf16-mixed" if device.type == "cuda" else "fp32"
    return _POLICIES[name]


def inference_dtype(precision: str) -> str:
    """The `dtype` name (models.pick_dtype) for evaluating a run's checkpoints: the precision's compute
    dtype, so a study evaluates in the numerics it trained in (auto stays auto: bf16 on GPU, fp32 on CPU)."""
    return {"auto": "auto", "fp32": "float32", "fp16-mixed": "float16"}.get(precision, "bfloat16")


def autocast(policy: Policy, device: torch.device):
    """A fresh autocast context for one pass (a no-op when the policy computes in its weights' dtype).

    Sampling, rollout-time, reference and update log-probs all enter the same one, so the ratio of
    the first update is computed from identical numerics on both sides."""
    if policy.compute is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=policy.compute)


def grad_scaler(policy: Policy, device: torch.device):
    """torch.amp.GradScaler for fp16-mixed, None otherwise."""
    return torch.amp.GradScaler(device.type) if policy.loss_scaling else None


def fsdp_mixed_precision(policy: Policy):
    """FSDP2's MixedPrecisionPolicy for bf16-mixed (bf16 gathered weights, fp32 gradient reduction), else None."""
    if policy.name != "bf16-mixed":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def cast_reference(reference, policy: Policy):
    """The frozen reference in the policy's reference dtype (None stays None)."""
    return None if reference is None else reference.to(policy.reference)


def adapters_in_float32(model) -> None:
    """LoRA adapters (the only trainable weights under peft) in float32, whatever the base's dtype:
    they are what the optimizer updates, so they need no master copies."""
    for param in model.parameters():
        if param.requires_grad and param.dtype in LOW:
            param.data = param.data.float()


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over float32 master copies of low-precision (bf16/fp16) weights.

    The model keeps its bfloat16 weights (for memory); the optimizer's parameters are float32
    copies. After backward, `step` casts each low-precision gradient to float32 onto its master,
    steps the masters with AdamW, and copies them back into the model rounded to bfloat16, so the
    small steps accumulate in the masters instead of rounding away. Float32 parameters (LoRA
    adapters) are stepped directly. The masters travel in `state_dict` so a resumed run continues
    from the same float32 values, not from the rounded weights."""

    def __init__(self, params, **kwargs):
        self.model_params = list(params)
        self.masters = [p.detach().float().clone() if p.dtype in LOW else p for p in self.model_params]
        super().__init__(self.masters, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        for param, master in self._pairs():
            master.grad = None if param.grad is None else param.grad.float()
            param.grad = None  # freed as it is cast: at most one gradient copy per weight at a time
        loss = super().step(closure)
        for param, master in self._pairs():
            param.copy_(master)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for param, _ in self._pairs():
            param.grad = None

    def state_dict(self):
        state = super().state_dict()
        state["master_weights"] = [master.detach().clone() for _, master in self._pairs()]
        return state

    def load_state_dict(self, state_dict) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop("master_weights", None)
        super().load_state_dict(state_dict)
        if saved is not None:
            with torch.no_grad():
                for (param, master), value in zip(self._pairs(), saved):
                    master.copy_(value)
                    param.copy_(master)

    def _pairs(self):
        return [(p, m) for p, m in zip(self.model_params, self.masters) if m is not p]


def make_optimizer(params, policy: Policy, deepspeed: bool, **adamw) -> torch.optim.Optimizer:
    """AdamW, with float32 master weights when the policy asks for them. Under DeepSpeed its bf16
    section keeps the masters, so it gets the plain optimizer to wrap."""
    params = list(params)
    kind = MasterWeightAdamW if policy.master_weights and not deepspeed else torch.optim.AdamW
    if deepspeed:
        return kind(params, **adamw)
    try:
        # The fused kernel updates each weight in one pass. The per-tensor loop (torch's default on a
        # CPU) makes two weight-sized temporaries, 1.9 GB for a 152k x 1,536 embedding; the multi-tensor
        # one (its default on a GPU) makes them for every weight at once. TRL's default too.
        return kind(params, fused=True, **adamw)
    except RuntimeError:  # a device or dtype without the fused kernel
        return kind(params, **adamw)


def updates_lost(model, optimizer, deepspeed: bool = False) -> str | None:
    """Why updates would round away, or None: trainable bf16/fp16 weights that a plain optimizer
    updates in place (DeepSpeed's bf16/fp16 sections and MasterWeightAdamW keep float32 masters)."""
    if deepspeed or isinstance(optimizer, MasterWeightAdamW):
        return None
    low = [p for p in model.parameters() if p.requires_grad and p.dtype in LOW]
    if not low:
        return None
    total = sum(1 for p in model.parameters() if p.requires_grad)
    return (
        f"{len(low)} of {total} trainable weight tensors are {low[0].dtype} and updated in place by a plain "
        "optimizer: at small learning rates most updates round away. Use precision=bf16-mixed "
        "(float32 weights, bfloat16 compute) or precision=bf16-true (float32 master weights)"
    )


def warn_if_updates_lost(model, optimizer, deepspeed: bool = False) -> None:
    """Warn once (one line) when `updates_lost` finds a reason."""
    reason = updates_lost(model, optimizer, deepspeed)
    if reason:
        warnings.warn(reason, stacklevel=2)
