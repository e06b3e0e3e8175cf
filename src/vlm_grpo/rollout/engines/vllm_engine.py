"""The `vllm` engine: vLLM samples the rollouts, in one of three places (`vllm.mode`).

- `spawn` (the default): a server process (`vllm_server.py`) the trainer starts from vLLM's
  environment (`make vllm-env`, `scripts/vllm_env.py`, or the trainer's own) and stops at the end;
- `server`: a server the user started themselves, for example on other GPUs;
- `colocate`: vLLM's engine inside the trainer's process (`vllm_colocate.py`), as TRL's default.

The requests and their answers are the same in every mode; only the backend that carries them
differs (HTTP, one request at a time, or a call). The parts:

- Prompts go as token ids of the chat template's text, one placeholder per image (vLLM expands
  them with its own processor), with the images as PNG; prefixes (prefix guidance) are appended.
- The model reaches it as a standard HF folder written at start (the standard processor class,
  with a video processor config, which vLLM's Qwen-VL processing needs); after every optimizer
  step the policy's weights (LoRA adapters merged, without touching the trainer's copy) go
  through one safetensors file in shared memory (`/dev/shm`) or, to a server on another host,
  in the request body, and the server swaps them in with `reload_weights`.
  (colocate: the tensors themselves, no file);
- A server that exits, stops answering or never becomes healthy raises `EngineError` naming it;
  the engine's process group is stopped on `close()` and when the interpreter exits.
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from ...models.families import adapter_for, base_model
from ..batch import Conversation, PromptBatch
from ..generation import mask_after_end
from .base import Completions, EngineError, SamplingParams
from .server import exit_cause, free_port, launch, stop_server, wait_healthy
from .weights import export_folder, policy_state_dict

SERVER_SCRIPT = Path(__file__).with_name("vllm_server.py")
STAMP = "vlm-grpo-engine.json"  # written by scripts/vllm_env.py once vLLM imports in the environment
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM's CPU attention backend


@dataclass
class VLLMConfig:
    """The vLLM engine (`rollout_engine: vllm`): a server from its own environment (`make vllm-env`)."""

    mode: str = "spawn"
    """spawn: the trainer starts the server and stops it at the end | server: use one the user started
    (`python src/vlm_grpo/rollout/engines/vllm_server.py --model FOLDER --port N` in the vLLM environment)
    | colocate: vLLM inside the trainer's process (vLLM installed beside the trainer: `pip install -e ".[vllm]"`)."""
    python: str = ".venv-vllm/bin/python"
    """The vLLM environment's interpreter (spawn)."""
    host: str = "127.0.0.1"
    """The server's host (server mode; spawn always uses 127.0.0.1)."""
    port: int = 0
    """The server's port (spawn: 0 picks a free one)."""
    dtype: str = "auto"
    """The engine's weights: auto (the trainer's compute dtype) | float32 | bfloat16 | float16."""
    startup_timeout: float = 600.0
    """Seconds the server may take to become healthy (the first start compiles: about a minute on a CPU)."""
    request_timeout: float = 600.0
    """Seconds one request may take before the engine counts as hung."""
    max_model_len: int = 4096
    """Longest prompt plus completion, in tokens (image tokens included)."""
    kv_cache_gib: int = 1
    """KV-cache size on a CPU in whole GiB (VLLM_CPU_KVCACHE_SPACE, unless set in the environment)."""
    gpu_memory_utilization: float = 0.5
    """Share of the GPU the engine may take (a GPU shared with the trainer needs room for both)."""
    enforce_eager: bool = False
    """No CUDA graphs or compilation (faster start, slower decoding)."""
    sleep: bool = True
    """colocate: free the engine's GPU memory during the update (vLLM's sleep mode) where the platform has it."""

    def check(self, cfg, need) -> None:
        modes = ("spawn", "server", "colocate")
        need(self.mode in modes, f"vllm.mode={self.mode!r} is not one of {', '.join(modes)}")
        need(
            self.mode != "colocate" or not cfg.overlap_rollout,
            "overlap_rollout=true needs the engine in another process: vllm.mode=colocate samples in the trainer's",
        )
        need(self.kv_cache_gib >= 1, f"vllm.kv_cache_gib={self.kv_cache_gib} must be a whole number of GiB, >= 1")
        dtypes = ("auto", "float32", "bfloat16", "float16")
        need(self.dtype in dtypes, f"vllm.dtype={self.dtype!r} is not one of {', '.join(dtypes)}")
        need(
            self.mode != "server" or self.port > 0,
            "vllm.mode=server needs vllm.port (and vllm.host) of the server you started",
        )


class VLLMEngine:
    name = "vllm"
    own_logprobs = True

    def __init__(self, model, processor, options):
        cfg = options.settings or VLLMConfig()
        adapter = adapter_for(model)
        self.processor, self.tokenizer, self.device = processor, processor.tokenizer, torch.device("cpu")
        self.end_ids = adapter.end_token_ids(processor, model)
        self.bad_ids = adapter.vision_token_ids(model)
        # The image placeholder the processor expands: collapsed again in a conversation's tool turns.
        token = getattr(processor, "image_token", None)
        self.image_id = self.tokenizer.convert_tokens_to_ids(token) if token else None
        workdir = Path(options.workdir or tempfile.mkdtemp(prefix="vlm-grpo-vllm-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vllm-engine")
        self.backend = connect(cfg, model, processor, options, workdir)
        if cfg.mode == "server":
            self.update_weights(model)  # a server the user started may hold other weights
        atexit.register(self.close)

    # ------------------------------------------------------------------ sampling
    def sample(
        self, prompts: PromptBatch, params: SamplingParams, prefixes: list[list[int]] | None = None
    ) -> Completions:
        return self._collect(self._request_body(prompts, params, prefixes))

    def submit(self, prompts: PromptBatch, params: SamplingParams) -> Future:
        body = self._request_body(prompts, params, None)  # the seed is drawn here, in the caller's order
        return self.pool.submit(self._collect, body)

    def sample_conversations(
        self, prompts: PromptBatch, conversations: list[Conversation], params: SamplingParams
    ) -> Completions:
        """Each conversation as one request: its prompt's tokens, then its turns so far with every
        image's expanded placeholders collapsed to one (vLLM expands them again with its own
        processor), and the images in order: the prompt's, then the tools'."""
        texts = self._texts(prompts)
        requests = []
        for c in conversations:
            if c.turns.shown and self.image_id is None:
                raise EngineError(
                    "the vllm engine cannot show tool images to a model whose processor names no image token"
                )
            ids = self.tokenizer(texts[c.prompt], add_special_tokens=False)["input_ids"]
            ids += collapse_runs(c.tokens, self.image_id) if c.turns.shown else c.tokens
            images = [*prompts.samples[c.prompt].load_images(), *c.turns.shown]
            requests.append({"prompt_token_ids": ids, "images": images})
        return self._collect(self._body(requests, params))

    def _texts(self, prompts: PromptBatch) -> list[str]:
        if prompts.texts is None:
            raise ValueError("the vllm engine needs the prompts' texts: encode them with rollout.encode_prompts")
        return prompts.texts

    def _request_body(self, prompts: PromptBatch, params: SamplingParams, prefixes) -> dict:
        requests = []
        for i, (sample, text) in enumerate(zip(prompts.samples, self._texts(prompts))):
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            requests.append(
                {"prompt_token_ids": ids + (prefixes[i] if prefixes else []), "images": sample.load_images()}
            )
        return self._body(requests, params)

    def _body(self, requests: list[dict], params: SamplingParams) -> dict:
        """One generate request; its images stay decoded (`PIL.Image`) until a backend needs them as bytes."""
        return {
            "requests": requests,
            "n": params.group_size,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            # vLLM's own generator, seeded from the trainer's: a run is reproducible from its seed.
            "seed": int(torch.randint(2**31 - 1, (1,))),
            "stop_token_ids": self.end_ids,
            "bad_token_ids": self.bad_ids,
        }

    def _collect(self, body: dict) -> Completions:
        return completions_of(self.backend.generate(body), self.end_ids, self.tokenizer)

    def evaluator(self) -> VLLMEngine:
        return self

    # ------------------------------------------------------------------ weights
    def update_weights(self, model) -> float:
        began = time.perf_counter()
        self.backend.load(policy_state_dict(model))
        return time.perf_counter() - began

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()


def connect(cfg: VLLMConfig, model, processor, options, workdir: Path):
    """The backend of `cfg.mode`: a server over HTTP, or vLLM in this process (imported only when asked)."""
    if cfg.mode == "colocate":
        from .vllm_colocate import ColocatedBackend

        return ColocatedBackend(cfg, model, processor, engine_dtype(options.dtype, cfg.dtype), options.seed, workdir)
    return ServerBackend(cfg, model, processor, options, workdir)


class ServerBackend:
    """A vLLM server over HTTP: started here from `vllm.python` (spawn) or by the user (server). Weights go
    through one safetensors file in shared memory to a server on this host, in the request body to another."""

    def __init__(self, cfg: VLLMConfig, model, processor, options, workdir: Path):
        self.timeout, self.process = cfg.request_timeout, None
        self.local = cfg.mode == "spawn" or cfg.host in ("127.0.0.1", "localhost")
        shm = Path("/dev/shm")
        self.weights_file = (shm if shm.is_dir() else workdir) / f"vlm-grpo-{os.getpid()}-{id(self)}.safetensors"
        if cfg.mode == "spawn":
            check_environment(Path(cfg.python), model)
            folder = export_folder(model, processor, workdir / "engine-model")
            self.log = workdir / "engine.log"
            dtype = engine_dtype(options.dtype, cfg.dtype)
            self.url, self.process = start_server(cfg, folder, dtype, options.seed, self.log)
        else:
            self.url, self.log = f"http://{cfg.host}:{cfg.port}", None
            wait_healthy(self.url, None, cfg.startup_timeout, None)

    def generate(self, body: dict) -> list[list[dict]]:
        wire = [{**r, "images": png_images(r["images"])} for r in body["requests"]]
        return self.request("/generate", {**body, "requests": wire})["outputs"]

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.local:
            save_file(tensors, str(self.weights_file))
            self.request("/update_weights", {"path": str(self.weights_file)})
        else:
            self.request("/update_weights", save(tensors), content_type="application/octet-stream")

    def close(self) -> None:
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


def completions_of(outputs: list[list[dict]], end_ids: list[int], tokenizer) -> Completions:
    """The server's rows (prompt-major, G per prompt) as right-padded tensors, masked as the hf engine's."""
    rows = [row for per_prompt in outputs for row in per_prompt]
    lengths = torch.tensor([len(row["token_ids"]) for row in rows])
    width = max(1, int(lengths.max()))
    pad = tokenizer.pad_token_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    logprobs = torch.zeros(len(rows), width)
    for n, (row, length) in enumerate(zip(rows, lengths.tolist())):
        ids[n, :length] = torch.tensor(row["token_ids"], dtype=torch.long)
        logprobs[n, :length] = torch.tensor(row["logprobs"], dtype=torch.float32)
    returned = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (N, C)
    mask, truncated = mask_after_end(ids, end_ids)
    mask = mask * returned  # a row cut short without an end token (max_model_len) is not padded into
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, pad))
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Completions(ids, mask, truncated, texts, logprobs * mask)


def collapse_runs(tokens: list[int], image_id: int) -> list[int]:
    """`tokens` with every run of the image placeholder `image_id` cut to one placeholder: an image as
    a prompt's text holds it, before the processor expands it to the image's patch count."""
    return [t for i, t in enumerate(tokens) if t != image_id or i == 0 or tokens[i - 1] != image_id]


def png_images(images) -> list[str]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode())
    return out


def engine_dtype(trainer_dtype: str, asked: str) -> str:
    """`auto`: the trainer's compute dtype, so the engine's log-probs are comparable (vLLM's own
    `auto` would run a float32 checkpoint in bfloat16 on CPU)."""
    return trainer_dtype if asked == "auto" else asked


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
