#!/usr/bin/env python
"""Seconds per GB of pushing the policy's weights to the vLLM engine, by path, at a real model's widths.

What runs, in this process: a random-weight Qwen2-VL-2B-Instruct (``benchmarks/configs/``: the real
vocabulary, 151,936, and the real widths) cut to ``--text-layers`` decoder layers and
``--vision-blocks`` vision blocks (8 and 4 by default: about 0.7 B parameters, what this CPU machine
holds twice, trainer and engine), the vLLM engine started beside it from ``.venv-vllm`` (``make
vllm-env``), and ``--repeats`` pushes of the whole policy through each path the engine has:

* ``file``: the engine's path to a server on the same host: safetensors written to /dev/shm, the
  server reads it and reloads in place (``reload_weights``);
* ``body``: its path to a server on another host: the same bytes in the request body
  (``vllm.weight_transfer=body``);
* ``broadcast``: ``vllm.weight_transfer=broadcast``, the tensors through a process group of two with the
  server (gloo here), streamed into its reload; the group opens once, before the timed pushes;
* ``in-process``: ``vllm.mode=colocate``, vLLM in this process taking the trainer's tensors
  (``reload_weights`` from an iterator, no file, no copy on the way); measured when vLLM imports in
  this interpreter (the one environment, ``.venv-vllm/bin/python benchmarks/weight_sync.py``), one
  engine at a time.

Each push is split into its parts: collecting the tensors (``policy_state_dict``: LoRA merged into
copies, tied tensors once), serialising them, and the rest (the server's read and reload, as the
engine waits for it). The last line printed is one JSON object; ``--out FILE`` writes it too. The
projection to whole checkpoints (2B, 3B, 7B in bfloat16) multiplies their size by the measured
seconds per GB: the push is linear in bytes on both paths (one pass over every tensor).

    python benchmarks/weight_sync.py                     # about 0.7 B parameters, float32, 3 pushes a path
    python benchmarks/weight_sync.py --dtype bfloat16    # the same weights in bfloat16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save, save_file

from real_shapes import Case, build

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS_GB = {"Qwen2-VL-2B": 2.21 * 2, "Qwen2.5-VL-3B": 3.75 * 2, "Qwen2.5-VL-7B": 8.29 * 2}
"""Whole checkpoints in bfloat16 (parameters x 2 bytes; parameter counts from their model cards)."""


def push_parts(engine, model, path: str) -> dict[str, float]:
    """One push through `path`, its parts timed: collect, serialise, and what the engine waits for."""
    from vlm_grpo.rollout.engines.weights import policy_state_dict

    backend = engine.backend
    t0 = time.perf_counter()
    tensors = policy_state_dict(model)
    t1 = time.perf_counter()
    if path == "file":
        save_file(tensors, str(backend.weights_file))
        t2 = time.perf_counter()
        backend.request("/update_weights", {"path": str(backend.weights_file)})
    elif path == "body":
        body = save(tensors)
        t2 = time.perf_counter()
        backend.request("/update_weights", body, content_type="application/octet-stream")
    else:  # broadcast or in-process: nothing to serialise
        t2 = time.perf_counter()
        backend.load(tensors)
    t3 = time.perf_counter()
    return {"collect_s": t1 - t0, "serialise_s": t2 - t1, "server_s": t3 - t2, "total_s": t3 - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-layers", type=int, default=8)
    parser.add_argument("--vision-blocks", type=int, default=4)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--out", default=None)
    a = parser.parse_args()
    from vlm_grpo.rollout.engines import EngineOptions, VLLMConfig, make_engine

    work = Path(tempfile.mkdtemp(prefix="weight-sync-"))
    case = Case("qwen2-vl-2b-instruct", 256, 16, "step", "ours", "cpu", str(work), a.text_layers, a.vision_blocks)
    model, processor, _, depth = build(case)
    model = model.to(getattr(torch, a.dtype))
    from vlm_grpo.rollout.engines.weights import policy_state_dict

    size_gb = sum(t.numel() * t.element_size() for t in policy_state_dict(model).values()) / 1e9  # what is pushed
    params = sum(p.numel() for p in model.parameters()) / 1e9
    results, start_s = {}, {}
    modes = {"spawn": ("file", "body", "broadcast")}
    if importlib.util.find_spec("vllm"):
        modes["colocate"] = ("in-process",)
    for mode, paths in modes.items():
        settings = VLLMConfig(mode=mode, python=a.python, max_model_len=1024, kv_cache_gib=1, startup_timeout=900)
        began = time.perf_counter()
        options = EngineOptions(settings=settings, dtype=a.dtype, workdir=work / mode)
        engine = make_engine("vllm", model, processor, options)
        start_s[mode] = round(time.perf_counter() - began, 1)
        try:
            for path in paths:
                if path == "broadcast":
                    opened = time.perf_counter()
                    engine.backend.transfer = "broadcast"
                    engine.backend.open_channel(torch.device("cpu"))
                    start_s["broadcast_group"] = round(time.perf_counter() - opened, 2)
                pushes = [push_parts(engine, model, path) for _ in range(a.repeats)]
                median = {key: statistics.median(p[key] for p in pushes) for key in pushes[0]}
                results[path] = {**median, "s_per_gb": median["total_s"] / size_gb, "pushes": pushes}
        finally:
            engine.close()
    report = {
        "model": "qwen2-vl-2b-instruct widths",
        "depth": {"text_layers": depth["text_layers"], "vision_blocks": depth["vision_blocks"]},
        "parameters_b": round(params, 3),
        "dtype": a.dtype,
        "size_gb": round(size_gb, 3),
        "engine_start_s": start_s,
        "paths": results,
        "projection_s": {
            name: {path: round(gb * found["s_per_gb"], 1) for path, found in results.items()}
            for name, gb in CHECKPOINTS_GB.items()
        },
        "threads": torch.get_num_threads(),
    }
    line = json.dumps(report)
    if a.out:
        Path(a.out).write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
