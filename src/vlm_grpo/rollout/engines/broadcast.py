"""Weights to a server engine by a collective broadcast instead of a file or a request body.

The trainer's pushing process and the server form a process group of two of their own (rank 0 sends,
rank 1, the server, receives), apart from the trainer's group: gloo when the weights are on a CPU,
NCCL when they are on a GPU (the server then needs a GPU of its own: NCCL takes one rank per device).
A push announces the tensors' names, dtypes and shapes in a request the server answers once it has
loaded them, and broadcasts the tensors in that order, one at a time, straight into the server's
loader. A side that fails closes the group, so the other stops at its next tensor with the reason
rather than at the timeout. Both sides must run the same torch (checked when the group opens).
"""

from __future__ import annotations

import datetime
import json
import socket
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.distributed as dist

from .base import EngineError
from .server import free_port


def address_towards(host: str, port: int) -> str:
    """This machine's address on the route to `host` (no packet is sent)."""
    if host in ("127.0.0.1", "localhost"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return s.getsockname()[0]


def tensor_list(tensors: dict[str, torch.Tensor]) -> list[list]:
    """What a push announces: [name, dtype, shape] per tensor, in the order they are broadcast."""
    return [[name, str(t.dtype).removeprefix("torch."), list(t.shape)] for name, t in tensors.items()]


class BroadcastChannel:
    """Rank 0 of a group of two with a server engine: `open` joins it, `send` pushes weights through it."""

    def __init__(self, group, device: torch.device):
        self.group, self.device = group, device

    @classmethod
    def open(cls, url: str, join: Callable[[dict], dict], device: torch.device, timeout: float) -> BroadcastChannel:
        """Open the group with the server at `url`; `join(body)` asks it to join (a request it answers once
        it has), sent beside this process's own joining, since each waits for the other."""
        with urllib.request.urlopen(url + "/health", timeout=timeout) as response:
            theirs = json.loads(response.read()).get("torch")
        if theirs != torch.__version__:
            raise EngineError(
                f"vllm.weight_transfer=broadcast needs the same torch on both sides: the trainer runs "
                f"{torch.__version__}, the engine at {url} {theirs}"
            )
        host, port = url.removeprefix("http://").rsplit(":", 1)
        here, store_port = address_towards(host, int(port)), free_port()
        backend = "nccl" if device.type == "cuda" else "gloo"
        wait = datetime.timedelta(seconds=timeout)
        store = dist.TCPStore(here, store_port, 2, True, timeout=wait, wait_for_workers=False)
        body = {"host": here, "port": store_port, "backend": backend, "timeout": timeout}
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(join, body)
            try:
                nccl = backend == "nccl"
                group = dist.ProcessGroupNCCL(store, 0, 2) if nccl else dist.ProcessGroupGloo(store, 0, 2, wait)
            except RuntimeError as exc:  # the server could not join: its answer says why, where it has one
                failure = answer.exception()
                raise failure or EngineError(f"the engine at {url} did not join the weight broadcast: {exc}") from None
            channel = cls(group, device)
            if answer.exception() is not None:
                channel.close()
                raise answer.exception()
        return channel

    def send(self, tensors: dict[str, torch.Tensor], announce: Callable[[list], dict]) -> dict:
        """Broadcast `tensors` while `announce(tensor_list)` waits for the server to load them; its answer.

        Whichever side fails first closes the group, so the other fails at its next tensor instead of
        waiting out the timeout; the channel is then closed for good."""
        options = dist.BroadcastOptions()
        options.rootRank = 0
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(announce, tensor_list(tensors))
            try:
                for tensor in tensors.values():
                    local = tensor.to(self.device).contiguous()
                    try:
                        self.group.broadcast([local], options).wait()
                    except RuntimeError as exc:  # the server failed or went away: its answer says how
                        self.close()
                        raise answer.exception() or EngineError(f"the weight broadcast broke: {exc}") from None
                return answer.result()
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self.group is not None:
            self.group.shutdown()
        self.group = None
