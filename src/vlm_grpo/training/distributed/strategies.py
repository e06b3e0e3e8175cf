"""How the processes hold the model: one strategy per run, picked from the config or the launcher.

- `Replicated` (default): every rank holds the whole model and averages gradients with an
  explicit all-reduce (world.py says why not DDP's hooks).
- `FullyShardedFSDP` (`fsdp=full_shard|shard_grad_op`): PyTorch FSDP2, see fsdp.py.
- `ZeRO` (`zero_stage=2|3`): DeepSpeed's ZeRO optimizer; stage 2 partitions gradients and
  Adam moments, stage 3 the weights too. DeepSpeed owns clipping and the update: a non-finite
  gradient is seen only after its update (the run still stops after five in a row, keeping the
  last good checkpoint), unlike the other strategies, which skip such an update.

The trainer talks to a strategy only through these methods, so its loop reads the same under
all three. Sharded weights are gathered for generation and evaluation: ranks decode for
different numbers of steps, and a sharded forward is a collective every rank must join.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from ...models import load_weights
from .. import precision
from . import fsdp
from .world import World


class Replicated:
    def __init__(self, world: World, policy: precision.Policy | None = None, device: torch.device | None = None):
        self.world = world
        self.policy = policy
        self.scaler = precision.grad_scaler(policy, device or world.device) if policy is not None else None

    def shard_models(self, *models) -> None:
        """Shard the policy (and reference) in place, before the optimizer is built over them."""

    def prepare(self, model, optimizer, dtype: torch.dtype, max_grad_norm: float, backwards_per_update: int):
        """Wrap what needs the optimizer; returns the optimizer to step."""
        return optimizer

    def gathered(self, model):
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, model, optimizer, max_grad_norm: float) -> float:
        """Average, clip and apply the gradients; returns their norm (not applied when non-finite)."""
        params = [p for p in model.parameters() if p.requires_grad]
        for param in params:
            if param.grad is None:  # every row skipped: the same zero gradient the passes would give
                param.grad = torch.zeros_like(param)
        self.average(params)
        if self.scaler is not None:  # fp16-mixed: clip and judge the true gradients
            self.scaler.unscale_(optimizer)
        max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
        norm = fsdp.norm_value(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if math.isfinite(norm):
            self.scaler.step(optimizer) if self.scaler is not None else optimizer.step()
        if self.scaler is not None:
            self.scaler.update()  # lowers the scale after an overflow, raises it after a quiet stretch
        optimizer.zero_grad(set_to_none=True)
        return norm

    def average(self, params: list[torch.nn.Parameter]) -> None:
        self.world.average_gradients(params)

    def checkpoint_payload(self, model, optimizer) -> tuple[dict | None, dict | None]:
        """(full weights when the model's own state dict is not them, optimizer state). Collective."""
        return None, optimizer.state_dict()

    def save_extra(self, folder: Path) -> None:
        """Files every rank writes into the checkpoint being staged. Collective."""

    def restore(self, model, optimizer, path: Path, state: dict) -> None:
        load_weights(model, path)
        optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        """Release what the strategy started, before the process group goes."""


class FullyShardedFSDP(Replicated):
    def __init__(self, world: World, mode: str, policy: precision.Policy | None = None, device=None):
        super().__init__(world, policy, device)
        self.mode = mode

    def shard_models(self, *models) -> None:
        mixed = precision.fsdp_mixed_precision(self.policy) if self.policy is not None else None
        for model in models:
            if model is not None:
                fsdp.shard(model, self.mode, mixed)

    def gathered(self, model):
        return fsdp.gathered(model, self.mode)

    def average(self, params):
        """Nothing to do: FSDP's reduce-scatter averaged the gradients in the backward pass."""

    def checkpoint_payload(self, model, optimizer):
        return fsdp.full_state_dict(model), fsdp.optimizer_state(model, optimizer)

    def restore(self, model, optimizer, path, state):
        fsdp.load_checkpoint_weights(model, path)
        fsdp.load_optimizer_state(model, optimizer, state["optimizer"])


class ZeRO(Replicated):
    def __init__(self, world: World, stage: int, policy: precision.Policy | None = None, device=None):
        super().__init__(world, policy, device)
        self.stage = stage
        self.engine = None

    def prepare(self, model, optimizer, dtype, max_grad_norm, backwards_per_update):
        try:
            import deepspeed
        except ImportError as exc:
            raise RuntimeError("zero_stage needs DeepSpeed: pip install 'vlm-grpo[deepspeed]'") from exc
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        config = {
            "train_micro_batch_size_per_gpu": 1,
            # DeepSpeed counts the micro-batches itself and updates after the last one.
            "gradient_accumulation_steps": backwards_per_update,
            "zero_optimization": {"stage": self.stage},
            "zero_allow_untested_optimizer": True,  # torch's AdamW, as in the other strategies
            "gradient_clipping": max_grad_norm,
            "bf16": {"enabled": dtype == torch.bfloat16},
            "fp16": {"enabled": dtype == torch.float16},
            "steps_per_print": 10**9,
        }
        self.engine, wrapped, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        return wrapped

    def gathered(self, model):
        if self.stage < 3:
            return nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()))

    def backward(self, loss):
        # The model runs outside DeepSpeed's engine.forward (shared-prefix passes call it twice),
        # so do what engine.forward does first: without it ZeRO-3 never advances its micro-step
        # counter and each micro-batch's gradients replace, not add to, the previous ones.
        self.engine.optimizer.clear_backward_seen_flag()
        self.engine.backward(loss, scale_wrt_gas=False)  # the loss is already the minibatch mean
        self.engine.step()  # a no-op but for the update's last micro-batch

    def step(self, model, optimizer, max_grad_norm):
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def checkpoint_payload(self, model, optimizer):
        weights = self.engine._zero3_consolidated_16bit_state_dict() if self.stage == 3 else None
        return weights, None

    def save_extra(self, folder):
        self.engine.save_checkpoint(str(folder / "deepspeed"), tag="state", save_latest=False)

    def close(self):
        if self.engine is not None:
            self.engine.destroy()  # its hooks and buffers would otherwise outlive the process group
            self.engine = None

    def restore(self, model, optimizer, path, state):
        self.engine.load_checkpoint(
            str(path / "deepspeed"), tag="state", load_optimizer_states=True, load_lr_scheduler_states=False
        )


def make(world: World, policy: precision.Policy | None = None, device: torch.device | None = None) -> Replicated:
    """The strategy; `policy` (precision.py) adds FSDP's mixed precision and fp16 loss scaling."""
    if not world.zero_stage:
        quiet_deepspeed_probe()
    if world.fsdp != "none":
        return FullyShardedFSDP(world, world.fsdp, policy, device)
    if world.zero_stage:
        return ZeRO(world, world.zero_stage, policy, device)
    return Replicated(world, policy, device)


def quiet_deepspeed_probe() -> None:
    """Without ZeRO, DeepSpeed is still imported where it is installed: accelerate's unwrap, inside
    every save_pretrained, imports it to ask whether the model is a DeepSpeedEngine. On a machine
    with no accelerator its import then prints "Setting accelerator to CPU ... we were unable to
    detect it" to stdout, at the first checkpoint. Naming the CPU, the accelerator it
    would pick, keeps that line away from runs it has nothing to do with; under zero_stage, or with
    any accelerator present, DeepSpeed detects as usual, and a DS_ACCELERATOR already set stands."""
    # torch.accelerator (CUDA, XPU, MPS, ...) where this torch has it, CUDA alone before.
    present = getattr(getattr(torch, "accelerator", None), "is_available", torch.cuda.is_available)
    if not present() and "deepspeed" not in sys.modules:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
