"""`vllm.mode=colocate`: vLLM's engine inside the trainer's process, the way TRL runs it by default.

The engine samples with vLLM's kernels and returns its own log-probs, as the server does (the
requests, the answers and the functions that build, sample and reload are the server's own,
`vllm_server.py`), but nothing crosses a process boundary:

- the model reaches vLLM as the same standard HF folder, written once at start;
- after every optimizer step the policy's tensors go straight into vLLM's weights, no file and no
  copy on the way (`reload_weights` from an iterator of HF-named tensors: on a CPU vLLM repacks its
  Linear weights for oneDNN at start-up, after which `load_weights` fails, and the same call works
  on a GPU); LoRA adapters are merged into copies, as for the server;
- where the platform has vLLM's sleep mode (CUDA), the engine sleeps between its sampling calls,
  its weights moved off the GPU and its KV cache freed, and wakes before the next call
  (`vllm.sleep`), so the update has the GPU's memory; `vllm.gpu_memory_utilization` is its share
  while awake;
- vLLM's log goes to `engine.log` in the engine's folder, as the server's does, not to the
  trainer's console (its loggers are the process's: they stay redirected until it exits);
- with several trainer processes each runs its own engine on the trainer's process group (vLLM's
  external launcher, as TRL runs it; process k logs to `engine-k.log`), or, with
  `vllm.tensor_parallel_size=K`, each K consecutive processes run one engine split across them and
  sample their prompts together;
- vLLM runs its engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), and every call
  into it runs under `torch.random.fork_rng`, so the trainer's random streams are the same as with
  any other engine: vLLM seeds the global generator when it starts. The process's threads stay the
  trainer's: vLLM's CPU worker neither binds them (`VLLM_CPU_OMP_THREADS_BIND=nobind` unless set)
  nor keeps `torch.set_num_threads` from working (it replaces it with a no-op; it is put back).

vLLM must import in the trainer's environment (`pip install -e ".[vllm]"`, docs/engines.md).
"""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist

from .base import EngineError
from .vllm_http import check_cpu_head_size
from .vllm_server import build_llm, generate, reload_weights
from .weights import export_folder


def import_vllm():
    # vLLM sets up console handlers for its loggers unless told not to; `log_to` gives them a file.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    try:
        import vllm
    except ImportError as exc:
        raise EngineError(
            f"vllm.mode=colocate runs vLLM in the trainer's process, and it does not import here ({exc}): "
            'pip install -e ".[vllm]" (docs/engines.md), or use vllm.mode=spawn'
        ) from None
    return vllm


def log_to(path: Path) -> None:
    """vLLM's loggers write to `path` instead of the console (vLLM sets up its "vllm" logger when imported)."""
    logger = logging.getLogger("vllm")
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()  # an earlier engine's log file
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False


def tensor_parallel_group(processes: int, size: int):
    """This process's group of `size` consecutive trainer processes (every process builds every group)."""
    group, _ = dist.new_subgroups_by_enumeration(
        [list(range(first, first + size)) for first in range(0, processes, size)]
    )
    return group


class ColocatedBackend:
    """vLLM's `LLM` in this process, behind the same two calls as a server: generate and load."""

    process = None  # nothing runs beside the trainer
    per_process = True  # each trainer process its own engine, loaded from its own tensors

    def __init__(self, cfg, model, processor, dtype: str, seed: int, workdir: Path, world=None, tensors=None):
        import_vllm()
        rank = world.rank if world is not None else 0
        log = workdir / ("engine.log" if rank == 0 else f"engine-{rank}.log")
        log_to(log)
        # Several processes: each its own engine on the trainer's process group (vLLM's external launcher,
        # as TRL runs it), so vLLM starts no group of its own.
        self.shares_group, self.group = world is not None, None
        several = {}
        if self.shares_group:
            several = {
                "distributed_executor_backend": "external_launcher",
                "tensor_parallel_size": cfg.tensor_parallel_size,
            }
            if cfg.tensor_parallel_size > 1:
                self.group = tensor_parallel_group(world.size, cfg.tensor_parallel_size)
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            check_cpu_head_size(model)
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))  # GiB, as for the server
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # tensors pass by reference to the worker
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # the trainer's threads are its own
        self.sleeps = cfg.sleep and current_platform.is_sleep_mode_available()
        folder = workdir / "engine-model"
        if rank == 0:
            export_folder(model, processor, folder, tensors)
        if world is not None:
            world.barrier()  # the folder is written once, by process 0
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        with torch.random.fork_rng():
            self.llm = build_llm(
                str(folder),
                dtype,
                seed,
                cfg.max_model_len,
                gpu_memory_utilization=cfg.gpu_memory_utilization,
                enforce_eager=cfg.enforce_eager,
                enable_sleep_mode=self.sleeps,
                **several,
            )
        # vLLM's CPU worker replaces torch.set_num_threads with a no-op for the whole process: the
        # trainer keeps its own (a study's runs share the CPU by setting it).
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        log_to(log)  # vLLM sets its loggers up again as the engine starts
        self.asleep = False
        self._rest()

    def generate(self, body: dict) -> list[list[dict]]:
        self._wake()
        try:
            with torch.random.fork_rng():
                return generate(self.llm, body)["outputs"] if self.group is None else self._generate_together(body)
        finally:
            self._rest()

    def _generate_together(self, body: dict) -> list[list[dict]]:
        """The group's prompts in one call, as every process of a tensor-parallel engine must make it (with
        the seed and settings of the group's first process), and this process's answers back."""
        bodies = [None] * dist.get_world_size(self.group)
        dist.all_gather_object(bodies, body, group=self.group)
        merged = {**bodies[0], "requests": [request for each in bodies for request in each["requests"]]}
        outputs = generate(self.llm, merged)["outputs"]
        start = sum(len(each["requests"]) for each in bodies[: dist.get_rank(self.group)])
        return outputs[start : start + len(body["requests"])]

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.asleep:
            self.llm.wake_up(tags=["weights"])  # the KV cache stays freed until the next sampling call
        with torch.no_grad():
            reload_weights(self.llm, tensors.items())

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        client = getattr(llm.llm_engine, "engine_core", None)
        if self.shares_group:
            # vLLM's groups are built on the trainer's process group, and its shutdown (at close, or when
            # the client is collected) destroys torch's default group, the trainer's: its groups go with
            # the trainer's, at the run's end.
            finalizer = getattr(client, "_finalizer", None)
            if finalizer is not None:
                finalizer.detach()
        elif client is not None:
            client.shutdown()
        del llm
        gc.collect()

    def _wake(self) -> None:
        if self.llm is None:
            raise EngineError("the colocated vLLM engine was closed")
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def _rest(self) -> None:
        if self.sleeps and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True
