"""The `vllm` engine's server backend: a vLLM server (`vllm_server.py`) over HTTP, started by the trainer
from vLLM's environment (`vllm.mode=spawn`) or by the user (`server`), shared by every trainer process.

Requests carry their images as PNG; weights go through one safetensors file in shared memory to a
server on this host, in the request body to another, or (`vllm.weight_transfer=broadcast`) through a
process group of two with the server (`broadcast.py`). A server that exits, stops answering or never
becomes healthy raises `EngineError` naming it (how it ended, not its log's last warning).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from ...models.families import base_model
from .base import EngineError
from .server import exit_cause, free_port, launch, stop_server, wait_healthy
from .weights import export_folder

SERVER_SCRIPT = Path(__file__).with_name("vllm_server.py")
STAMP = "vlm-grpo-engine.json"  # written by scripts/vllm_env.py once vLLM imports in the environment
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM's CPU attention backend


class ServerBackend:
    """A vLLM server over HTTP: started here from `vllm.python` (spawn) or by the user (server). Weights go
    by `transfer`: one safetensors file in shared memory (file), the request body (body), or a broadcast."""

    per_process = False  # one server for every trainer process

    def __init__(self, url: str, timeout: float, workdir: Path, process=None, log: Path | None = None):
        self.url, self.timeout, self.process, self.log = url, timeout, process, log
        self.transfer = "file" if url.startswith(("http://127.0.0.1:", "http://localhost:")) else "body"
        self.channel = None
        shm = Path("/dev/shm")
        self.weights_file = (shm if shm.is_dir() else workdir) / f"vlm-grpo-{os.getpid()}-{id(self)}.safetensors"

    @classmethod
    def open(cls, cfg, model, processor, options, workdir: Path, tensors=None) -> ServerBackend:
        """spawn: start the server and wait for it; server: wait for the user's (`cfg`: the `vllm` section;
        `options.dtype`: the engine's dtype, `auto` already resolved; `tensors`: the policy's, read already)."""
        if cfg.weight_transfer == "broadcast" and cfg.mode == "spawn":
            check_broadcast_device(next(model.parameters()).device)
        if cfg.mode == "server":
            url = f"http://{cfg.host}:{cfg.port}"
            wait_healthy(url, None, cfg.startup_timeout, None)
            backend = cls(url, cfg.request_timeout, workdir)
        else:
            check_environment(Path(cfg.python), model)
            folder = export_folder(model, processor, workdir / "engine-model", tensors)
            log = workdir / "engine.log"
            url, process = start_server(cfg, folder, options.dtype, options.seed, log)
            backend = cls(url, cfg.request_timeout, workdir, process, log)
        if cfg.weight_transfer != "auto":
            backend.transfer = cfg.weight_transfer
        return backend

    def open_channel(self, device: torch.device) -> None:
        """The broadcast group with the server, on the device the pushed tensors are on."""
        from .broadcast import BroadcastChannel

        try:
            join = functools.partial(self.request, "/open_broadcast")
            self.channel = BroadcastChannel.open(self.url, join, device, self.timeout)
        except EngineError:
            raise
        except (RuntimeError, OSError) as exc:
            raise EngineError(f"the weight broadcast to the engine at {self.url} could not open: {exc}") from None

    def generate(self, body: dict) -> list[list[dict]]:
        wire = [{**r, "images": png_images(r["images"]), **video_wire(r.get("video"))} for r in body["requests"]]
        return self.request("/generate", {**body, "requests": wire})["outputs"]

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.transfer == "broadcast":
            if self.channel is None:
                self.open_channel(next(iter(tensors.values())).device)
            try:
                self.channel.send(tensors, lambda announced: self.request("/update_weights", {"broadcast": announced}))
            except BaseException:
                self.channel = None  # closed by the failure
                raise
        elif self.transfer == "file":
            save_file(tensors, str(self.weights_file))
            self.request("/update_weights", {"path": str(self.weights_file)})
        else:
            self.request("/update_weights", save(tensors), content_type="application/octet-stream")

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        stop_server(self.url, self.process)
        self.process = None
        self.weights_file.unlink(missing_ok=True)

    def request(self, path: str, body, content_type: str = "application/json") -> dict:
        """POST `body` to the server's `path`; its JSON answer. A server that is down or fails raises EngineError."""
        data = json.dumps(body).encode() if content_type == "application/json" else body
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise EngineError(f"the vLLM engine at {self.url} failed on {path}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise EngineError(self._why_down(path, exc)) from None

    def _why_down(self, path: str, exc: Exception) -> str:
        if self.process is not None and self.process.poll() is not None:
            ended = exit_cause(self.process.returncode, self.log)
            return f"the vLLM engine (pid {self.process.pid}) {ended} during {path}"
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            return f"the vLLM engine at {self.url} did not answer {path} within {self.timeout:g} s"
        return f"the vLLM engine at {self.url} is unreachable during {path}: {getattr(exc, 'reason', exc)}"


def check_broadcast_device(device: torch.device) -> None:
    """A spawned server shares the trainer's first GPU, and NCCL pairs one process per GPU."""
    if device.type == "cuda":
        raise EngineError(
            "vllm.weight_transfer=broadcast from a GPU is NCCL, one process per GPU, and a spawned server "
            "shares the trainer's first GPU: start the server on another GPU (vllm.mode=server) or push by file"
        )


def video_wire(video: dict | None) -> dict:
    """A request's video with its frames as PNG (nothing without one)."""
    return {} if video is None else {"video": {**video, "frames": png_images(video["frames"])}}


def png_images(images) -> list[str]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


def check_environment(python: Path, model) -> None:
    stamp = python.parent.parent / STAMP
    if not python.exists() or not stamp.is_file():
        raise EngineError(f"no vLLM environment at {python.parent.parent}: build it with `make vllm-env`")
    if not json.loads(stamp.read_text()).get("cuda"):
        check_cpu_head_size(model)


def check_cpu_head_size(model) -> None:
    """vLLM's CPU attention takes a few head sizes only: refuse the others before starting it."""
    text = base_model(model).config.get_text_config()
    head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    if head not in CPU_HEAD_SIZES:
        raise EngineError(
            f"vLLM's CPU attention supports head sizes {', '.join(map(str, CPU_HEAD_SIZES))}; this model's is {head}"
        )


def start_server(cfg, folder: Path, dtype: str, seed: int, log: Path) -> tuple[str, subprocess.Popen]:
    port = cfg.port or free_port()
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0")  # one process: nothing to leave behind
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))  # GiB; the CPU check sees one NUMA node
    command = [cfg.python, str(SERVER_SCRIPT), "--model", str(folder), "--port", str(port), "--dtype", dtype]
    command += ["--seed", str(seed), "--max-model-len", str(cfg.max_model_len)]
    command += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)] + ["--enforce-eager"] * cfg.enforce_eager
    process = launch(command, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, cfg.startup_timeout, log)
    except EngineError:
        stop_server(url, process)
        raise
    return url, process
