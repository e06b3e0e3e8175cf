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
  step the policy's weights (LoRA adapters merged, without touching the trainer's copy) go to a
  server by `vllm.weight_transfer`: one safetensors file in shared memory (`/dev/shm`), the
  request body (a server on another host), or a broadcast through a process group of two with
  the server (`broadcast.py`); the server swaps them in with `reload_weights` (colocate: the
  tensors themselves, no file);
- A server that exits, stops answering or never becomes healthy raises `EngineError` naming it;
  the engine's process group is stopped on `close()` and when the interpreter exits.
"""

from __future__ import annotations

import atexit
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...errors import ConfigError
from ...models.families import adapter_for, base_model
from ...models.families.frames import frame_sampling
from ..batch import Conversation, PromptBatch
from ..generation import mask_after_end
from .base import Completions, EngineError, SamplingParams
from .hf import HFEngine
from .vllm_http import ServerBackend
from .weights import policy_state_dict


@dataclass
class VLLMConfig:
    """The vLLM engine (`rollout_engine: vllm`): a server beside the trainer (`make vllm-env` builds its
    environment), shared by every trainer process, or vLLM inside the trainer's process (`mode: colocate`)."""

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
    weight_transfer: str = "auto"
    """How a server takes each push: auto (file on this host, body otherwise) | file (safetensors in
    /dev/shm, read by a server on this host) | body (the same bytes in the request) | broadcast (a
    process group of two with the server: gloo from a CPU, NCCL from a GPU to a server on another GPU;
    the same torch on both sides). colocate loads the trainer's tensors in place and takes no setting."""
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
    tensor_parallel_size: int = 1
    """colocate: trainer processes per engine. Each group of this many consecutive processes runs one vLLM
    engine split across them (tensor parallel), sampling the group's prompts together; it divides the
    number of processes. 1: every process its own whole engine. Above 1, evaluation during training
    samples with the policy itself (process 0 evaluates alone; a split engine needs its whole group)."""

    def check(self, cfg, need) -> None:
        modes = ("spawn", "server", "colocate")
        need(self.mode in modes, f"vllm.mode={self.mode!r} is not one of {', '.join(modes)}")
        need(
            self.mode != "colocate" or not cfg.overlap_rollout,
            "overlap_rollout=true needs the engine in another process: vllm.mode=colocate samples in the trainer's",
        )
        need(
            self.tensor_parallel_size == 1 or self.mode == "colocate",
            f"vllm.tensor_parallel_size={self.tensor_parallel_size} splits a colocated engine across trainer "
            "processes: it needs vllm.mode=colocate (a server you start takes vLLM's own --tensor-parallel-size)",
        )
        need(self.tensor_parallel_size >= 1, f"vllm.tensor_parallel_size={self.tensor_parallel_size} must be >= 1")
        need(
            self.tensor_parallel_size == 1 or not cfg.tools.names,
            f"vllm.tensor_parallel_size={self.tensor_parallel_size} with tools: each process's conversations take "
            "their own number of turns, and a split engine needs every process of its group at every call",
        )
        transfers = ("auto", "file", "body", "broadcast")
        need(
            self.weight_transfer in transfers,
            f"vllm.weight_transfer={self.weight_transfer!r} is not one of {', '.join(transfers)}",
        )
        need(
            self.weight_transfer == "auto" or self.mode != "colocate",
            f"vllm.weight_transfer={self.weight_transfer} is for a server: vllm.mode=colocate loads the "
            "trainer's tensors in place",
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
        self.frames = frame_sampling(processor)  # how a video's frames are sampled and sized; None: no videos
        self.kind = base_model(model).config.model_type
        self.model, self.adapter = model, adapter
        workdir = Path(options.workdir or tempfile.mkdtemp(prefix="vlm-grpo-vllm-"))
        workdir.mkdir(parents=True, exist_ok=True)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="vllm-engine")
        world = options.world
        # Several trainer processes: one server they share (the first pushes the weights), or an engine each.
        self.ranks = world if world is not None and world.size > 1 else None
        self.options = options
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
        requests, lengths = [], prompts.inputs["attention_mask"].sum(1).tolist()  # the trainer's expanded prompts
        grids = iter(prompts.inputs.get("video_grid_thw", torch.zeros(0, 3)).tolist())  # one per video, in order
        seconds = iter(prompts.inputs.get("second_per_grid_ts", torch.zeros(0)).tolist())
        for i, (sample, text) in enumerate(zip(prompts.samples, self._texts(prompts))):
            prefix = prefixes[i] if prefixes else []
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + prefix
            request = {
                "prompt_token_ids": ids,
                "images": sample.load_images(),
                "trainer_tokens": lengths[i] + len(prefix),
            }
            if sample.video is not None:
                request["video"] = self._video(sample, next(grids), next(seconds, None))
            requests.append(request)
        return self._body(requests, params)

    def _video(self, sample, grid: list[int], seconds: float | None) -> dict:
        """The sample's video as the trainer's processor saw it: the same sampled, sized frames (decoded once:
        a video the prompt stream decoded is used as it is) and where they sit in the source; refused where
        vLLM, which follows the Qwen reference, would place the text after it elsewhere than the trainer."""
        if not self.adapter.places_text_after_video_as_reference(self.model, grid, seconds):
            raise EngineError(
                f"the vllm engine refuses this {self.kind} video: its {grid[0]} frame pairs outlast its merged "
                "grid, where vLLM (as the Qwen reference) places the text after it elsewhere than transformers "
                "5.x does; set video.positions=reference, use fewer or larger frames, or rollout_engine=hf"
            )
        video = sample.load_video(self.frames)
        return {"frames": list(video.frames), "fps": video.fps, "indices": list(video.indices), "total": video.total}

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
        outputs = self.backend.generate(body)
        for n, (request, rows) in enumerate(zip(body["requests"], outputs)):
            expected, got = request.get("trainer_tokens"), rows[0].get("prompt_tokens") if rows else None
            if expected is not None and got is not None and expected != got:
                raise EngineError(
                    f"vLLM's processor expanded prompt {n} to {got} tokens and the trainer's to {expected}: they "
                    "process its images or video differently (other transformers releases?), so the engine would "
                    "sample from another prompt than the trainer scores"
                )
        return completions_of(outputs, self.end_ids, self.tokenizer)

    def evaluator(self) -> VLLMEngine | HFEngine:
        """This engine; but process 0 evaluates alone and a split engine (tensor_parallel_size > 1) needs
        every process of its group at every call, so then the policy itself evaluates (the hf engine)."""
        if (self.options.settings or VLLMConfig()).tensor_parallel_size > 1:
            return HFEngine(self.model, self.processor)
        return self

    # ------------------------------------------------------------------ weights
    def update_weights(self, model) -> float:
        """The policy's weights into the engine: each process its own colocated engine; with one server
        for several processes the first pushes once while the others wait. Every process stops on a
        failed load as the process that failed does."""
        began = time.perf_counter()
        pushes = self.ranks is None or self.ranks.rank == 0 or self.backend.per_process

        def load() -> None:
            tensors = read_weights(model, self.options, pushes)
            if pushes:
                self.backend.load(tensors)

        if self.ranks is None:
            load()
        else:
            self.ranks.agreed(load, EngineError)
        return time.perf_counter() - began

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.backend.close()


def connect(cfg: VLLMConfig, model, processor, options, workdir: Path):
    """The backend of `cfg.mode`: a server over HTTP, or vLLM in this process (imported only when asked).
    Several trainer processes share one server, started (spawn) by the first, which tells the others
    where it is, or how it failed to start; colocated, each runs its own engine."""
    world = options.world
    several = world is not None and world.size > 1
    first = not several or world.rank == 0
    tensors = read_weights(model, options, first and cfg.mode != "server")  # the engine's first weights
    if cfg.mode == "colocate":
        from .vllm_colocate import ColocatedBackend

        processes = world.size if several else 1
        if processes % cfg.tensor_parallel_size:
            raise ConfigError(
                f"vllm.tensor_parallel_size={cfg.tensor_parallel_size} splits each colocated engine across that "
                f"many trainer processes, and {processes} were started: start a multiple of it"
            )
        dtype = engine_dtype(options.dtype, cfg.dtype)
        return ColocatedBackend(
            cfg, model, processor, dtype, options.seed, workdir, world if several else None, tensors
        )
    options = replace(options, dtype=engine_dtype(options.dtype, cfg.dtype))
    if not several:
        return ServerBackend.open(cfg, model, processor, options, workdir, tensors)
    backend, error = None, None
    if world.rank == 0:
        try:
            backend = ServerBackend.open(cfg, model, processor, options, workdir, tensors)
        except EngineError as exc:
            error = str(exc)
    url, error = world.gather((backend.url if backend else None, error))[0]
    if error:
        raise EngineError(error if world.rank == 0 else f"process 0 could not start the engine: {error}")
    return backend or ServerBackend(url, cfg.request_timeout, workdir)


def read_weights(model, options, needed: bool) -> dict[str, torch.Tensor] | None:
    """The policy's tensors as the engine takes them where this process `needed` them, else None. Weights
    partitioned across processes (FSDP2, ZeRO-3) are read by every process, as gathering them is a
    collective: process 0 alone would wait for the others forever."""
    world = options.world
    partitioned = world is not None and world.size > 1 and (world.fsdp != "none" or world.zero_stage == 3)
    if not (needed or partitioned):
        return None
    with options.gather() if options.gather is not None else nullcontext():
        tensors = policy_state_dict(model)
    return tensors if needed else None


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


def engine_dtype(trainer_dtype: str, asked: str) -> str:
    """`auto`: the trainer's compute dtype, so the engine's log-probs are comparable (vLLM's own
    `auto` would run a float32 checkpoint in bfloat16 on CPU)."""
    return trainer_dtype if asked == "auto" else asked
