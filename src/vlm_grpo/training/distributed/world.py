"""Data parallelism for the trainer: one process per device, started by torchrun or accelerate.

Each rank takes its own slice of every global batch of prompts, samples and scores its own
groups, and the ranks average gradients before each optimizer step, so every rank holds the
same weights. Unsharded, gradients are averaged with one all-reduce per parameter after backward
(what DDP does, without its overlap) because a shared-prefix log-prob pass runs the model twice
before one backward, which DDP's reducer hooks are not built for; sharded (`fsdp`, see
`fsdp.py`), FSDP's reduce-scatter averages them. Only rank 0 logs, evaluates and saves.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    fsdp: str = "none"
    """The FSDP mode in force (see fsdp.py); none: not FSDP."""
    zero_stage: int = 0
    """The DeepSpeed ZeRO stage in force (see strategies.py); 0: not DeepSpeed."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group; its threads would otherwise outlive the interpreter and abort the exit."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
            gc.collect()  # objects holding communicator threads go now, not at interpreter exit

    def local_slice(self, items: list) -> list:
        """This rank's contiguous slice of a global batch (the batch size divides by the world size)."""
        per_rank = len(items) // self.size
        return items[self.rank * per_rank : (self.rank + 1) * per_rank]

    def sum(self, value: float) -> float:
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor)

    def gather(self, value) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if self.size == 1:
            return [value]
        gathered: list = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def agreed(self, work: Callable[[], T], failure: type[Exception]) -> T:
        """`work()` on every rank, the ranks agreeing on whether it failed with `failure`: the rank that
        failed raises its own error and every other rank the first failed rank's, named ("process 1:
        ..."), so all stop at the same point instead of waiting for each other in the next collective."""
        try:
            value, error = work(), None
        except failure as exc:
            value, error = None, exc
        said = self.gather(str(error) if error is not None else None)
        failed = [(rank, line) for rank, line in enumerate(said) if line]
        if error is not None:
            raise error
        if failed:
            raise failure(f"process {failed[0][0]}: {failed[0][1]}")
        return value

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        if self.size == 1:
            return
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)  # every rank must join every all-reduce
            dist.all_reduce(param.grad)
            param.grad.div_(self.size)

    def mean_metrics(self, metrics: dict) -> dict:
        """Each numeric metric averaged over ranks, ignoring ranks where it is undefined (NaN)."""
        if self.size == 1:
            return metrics
        gathered = self.gather(metrics)
        merged = {}
        for key, value in metrics.items():
            values = [m.get(key) for m in gathered]
            numbers = [
                v for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))
            ]
            if key in ("data/skipped", "optim/skipped_steps", "injection/groups_injected"):
                merged[key] = sum(numbers)
            elif numbers and all(isinstance(v, (int, float)) for v in values if v is not None):
                merged[key] = sum(numbers) / len(numbers)
            else:
                merged[key] = value if numbers else float("nan")
        return merged


def setup(device_name: str, fsdp: str = "none", zero_stage: int = 0) -> World:
    """Join the process group that torchrun / accelerate launch describe in the environment (if any)."""
    from accelerate import PartialState

    force_cpu = device_name == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=force_cpu)
    device = torch.device("cpu") if force_cpu else state.device
    if fsdp == "none" and not zero_stage:
        fsdp, zero_stage = launcher_fsdp_mode(), launcher_zero_stage()
    if state.num_processes < 2:
        fsdp, zero_stage = "none", 0  # nothing to shard over
    return World(rank=state.process_index, size=state.num_processes, device=device, fsdp=fsdp, zero_stage=zero_stage)


def launcher_zero_stage() -> int:
    """The ZeRO stage an `accelerate launch` DeepSpeed config asked for (0 when it asked for none)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return 0
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))


def launcher_fsdp_mode() -> str:
    """The sharding an `accelerate launch` FSDP config asked for ("none" if it asked for no sharding)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return "none"
    # FSDP2 configs say fsdp_reshard_after_forward: true|false; FSDP1 ones name a strategy.
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "").lower()
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "").upper()
    if reshard in ("false", "shard_grad_op") or strategy in ("SHARD_GRAD_OP", "2"):
        return "shard_grad_op"
    return "full_shard"
