"""The vLLM side of the `vllm` rollout engine: a small HTTP server on 127.0.0.1 around `vllm.LLM`.

This file runs as a script in vLLM's own environment (`make vllm-env`), whose torch and
transformers may differ from the trainer's: it imports only the standard library, vLLM, PIL and
safetensors, never `vlm_grpo`. One request at a time (vLLM's `LLM` is not thread-safe); the
trainer's client (`vllm_engine.py`) orders its calls. `vllm.mode=colocate` (`vllm_colocate.py`)
builds, samples and reloads with the same functions inside the trainer's process.

    POST /generate        prompts as token ids (one placeholder per image or video, unexpanded) with
                          PNG images and a video's PNG frames; returns token ids, per-token log-probs
                          and finish reasons
    POST /update_weights  {"path": a safetensors file of HF-named tensors}, or the file's bytes as
                          application/octet-stream (a trainer on another host), or {"broadcast": [[name,
                          dtype, shape], ...]} received in that order through the open broadcast group:
                          reload_weights in place, then the prefix, encoder and multimodal caches are reset
    POST /open_broadcast  {"host", "port", "backend", "timeout"}: join the trainer's group of two as rank 1
                          (gloo, or NCCL on a GPU) for the broadcast pushes
    GET  /health          200 once the engine is up; the versions it runs
    POST /shutdown        stop serving

Weights: on CPU, vLLM repacks Linear weights into oneDNN handles at start-up, so
`model.load_weights()` fails afterwards; the worker's `reload_weights(weights_iterator=...,
is_checkpoint_format=True)` maps HF names through the model's own loader and works. Without the
cache resets the next image request fails with "Encoder cache miss" (or reuses stale KV blocks).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def build_llm(model: str, dtype: str, seed: int, max_model_len: int, max_images: int = 4, **engine):
    """vLLM's `LLM` as every mode of the engine runs it; `engine`: further `LLM` arguments (memory, eager).

    On a CPU, prompts are prefilled whole: when vLLM 0.32 splits a prompt's prefill across engine steps it
    rewinds the request's random generator, which a CPU generator cannot do, and every request here is
    seeded ("CPU Generator does not use offset")."""
    from vllm import LLM
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        engine.setdefault("enable_chunked_prefill", False)
        engine.setdefault("max_num_batched_tokens", max(max_model_len, 8192))

    return LLM(
        model=model,
        dtype=dtype,
        seed=seed,
        max_model_len=max_model_len,
        logprobs_mode="processed_logprobs",  # after temperature: what the trainer's ratio compares with
        limit_mm_per_prompt={"image": max_images, "video": 1},
        enable_prefix_caching=True,
        **engine,
    )


def decode_image(data):
    """A PNG as base64 text (over HTTP), or an image already decoded (in the trainer's process)."""
    from PIL import Image

    if not isinstance(data, str):
        return data
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def video_item(video: dict):
    """A prompt's video as vLLM takes it: its frames, already sampled and sized by the trainer, with where
    they sit in the source (Qwen3-VL's timestamps and Qwen2.5-VL's seconds per grid step are read from it)."""
    import numpy as np

    frames = np.stack([np.asarray(decode_image(frame)) for frame in video["frames"]])
    metadata = {
        "fps": video["fps"],
        "frames_indices": list(video["indices"]),
        "total_num_frames": video["total"],
        "duration": video["total"] / video["fps"],
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "do_sample_frames": False,
        "video_backend": "frames",
    }
    return frames, metadata


# The frames come sampled and sized: vLLM's processor keeps them as they are, as the trainer's does.
KEEP_FRAMES = {"videos_kwargs": {"do_sample_frames": False, "do_resize": False}}


def generate(llm, body: dict) -> dict:
    from vllm import SamplingParams

    greedy = body.get("temperature") is None
    params = SamplingParams(
        n=body["n"],
        max_tokens=body["max_tokens"],
        temperature=0.0 if greedy else body["temperature"],
        top_p=1.0 if greedy else body.get("top_p", 1.0),
        top_k=0 if greedy else body.get("top_k", 0),
        seed=body.get("seed"),
        stop_token_ids=body["stop_token_ids"],
        logit_bias={int(t): -100.0 for t in body.get("bad_token_ids", [])} or None,
        logprobs=0,
        skip_special_tokens=True,
        detokenize=False,
    )
    prompts = []
    for request in body["requests"]:
        prompt, media = {"prompt_token_ids": request["prompt_token_ids"]}, {}
        if request.get("images"):
            media["image"] = [decode_image(i) for i in request["images"]]
        if request.get("video"):
            media["video"] = [video_item(request["video"])]
            prompt["mm_processor_kwargs"] = KEEP_FRAMES
        if media:
            prompt["multi_modal_data"] = media
        prompts.append(prompt)
    outputs = llm.generate(prompts, params, use_tqdm=False)
    results = []
    for output in outputs:
        rows = []
        for completion in output.outputs:
            ids = list(completion.token_ids)
            logprobs = [step[token].logprob for step, token in zip(completion.logprobs or [], ids)]
            rows.append({"token_ids": ids, "logprobs": logprobs, "finish_reason": completion.finish_reason})
        rows[0]["prompt_tokens"] = len(output.prompt_token_ids or [])  # as its processor expanded the prompt
        results.append(rows)
    return {"outputs": results}


class Receiver:
    """The server's end of the trainer's broadcast group (rank 1 of 2); a new trainer replaces the old group."""

    def __init__(self):
        self.group, self.device = None, None

    def open(self, body: dict) -> dict:
        import datetime

        import torch
        import torch.distributed as dist

        self.close()
        wait = datetime.timedelta(seconds=body["timeout"])
        store = dist.TCPStore(body["host"], body["port"], 2, False, timeout=wait)
        if body["backend"] == "nccl":
            self.group, self.device = dist.ProcessGroupNCCL(store, 1, 2), torch.device("cuda")
        else:
            self.group, self.device = dist.ProcessGroupGloo(store, 1, 2, wait), torch.device("cpu")
        return {"ok": True}

    def receive(self, announced: list):
        """(name, tensor) pairs as they arrive, in the announced order."""
        import torch
        import torch.distributed as dist

        if self.group is None:
            raise RuntimeError("no broadcast group is open: POST /open_broadcast first")
        options = dist.BroadcastOptions()
        options.rootRank = 0
        for name, dtype, shape in announced:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            self.group.broadcast([tensor], options).wait()
            yield name, tensor

    def close(self) -> None:
        if self.group is not None:
            self.group.shutdown()
        self.group = None


def update_weights(llm, body, receiver: Receiver) -> dict:
    from safetensors.torch import load, load_file

    began = time.perf_counter()
    if isinstance(body, dict) and "broadcast" in body:
        tensors = receiver.receive(body["broadcast"])
        try:
            reload_weights(llm, tensors)
            for _ in tensors:  # whatever the loader left: the sender waits until every tensor is taken
                pass
        except Exception:
            receiver.close()  # the sender fails at its next tensor instead of waiting out the timeout
            raise
        return {"seconds": time.perf_counter() - began, "tensors": len(body["broadcast"])}
    tensors = load(body) if isinstance(body, bytes) else load_file(body["path"])
    reload_weights(llm, tensors.items())
    return {"seconds": time.perf_counter() - began, "tensors": len(tensors)}


def reload_weights(llm, tensors) -> None:
    """HF-named (name, tensor) pairs into the engine's weights in place, then every cache that could hold
    the old ones. The loader takes them as they come, so a stream never needs the whole model at once."""
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(tensors), "is_checkpoint_format": True})
    llm.reset_prefix_cache()
    llm.reset_mm_cache()
    llm.llm_engine.reset_encoder_cache()


def make_handler(llm, versions: dict, receiver: Receiver):
    routes = {
        "/generate": functools.partial(generate, llm),
        "/update_weights": functools.partial(update_weights, llm, receiver=receiver),
        "/open_broadcast": receiver.open,
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # the trainer's own progress is the log
            pass

        def reply(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                self.reply(200, {"ok": True, **versions})
            else:
                self.reply(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            binary = self.headers.get("Content-Type") == "application/octet-stream"
            body = raw if binary else json.loads(raw or b"{}")
            if self.path == "/shutdown":
                self.reply(200, {"ok": True})
                self.server.stopping = True
                return
            route = routes.get(self.path)
            if route is None:
                self.reply(404, {"error": f"no route {self.path}"})
                return
            try:
                self.reply(200, route(body))
            except Exception as exc:  # the client names the failure; the server stays up
                self.reply(500, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="vLLM rollout server for vlm-grpo")
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-images", type=int, default=4)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--enforce-eager", action="store_true")
    args = parser.parse_args(argv)
    # The port is taken before vLLM starts, which binds ports of its own and could take this one; it is
    # not listened on until the engine is up, so a health check meanwhile is refused, not left waiting.
    server = HTTPServer((args.host, args.port), BaseHTTPRequestHandler, bind_and_activate=False)
    server.server_bind()
    import torch
    import vllm

    llm = build_llm(
        args.model,
        args.dtype,
        args.seed,
        args.max_model_len,
        args.max_images,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager,
    )
    versions = {"vllm": vllm.__version__, "torch": torch.__version__, "model": args.model}
    receiver = Receiver()
    server.RequestHandlerClass = make_handler(llm, versions, receiver)
    server.server_activate()
    server.stopping = False
    print(f"vllm engine serving on {args.host}:{args.port}", flush=True)
    while not server.stopping:
        server.handle_request()
    receiver.close()


if __name__ == "__main__":
    main()
