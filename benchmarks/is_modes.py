#!/usr/bin/env python
"""What each engine-correction mode would touch, by answer length: vLLM's bfloat16 against a float32 trainer.

The four modes of `vllm_importance_sampling_mode` bound either each sampled token's ratio
p_trainer / p_engine or its row's product of them. Per token the ratios stay near 1; a row's product
multiplies one per token, so its spread grows with the answer's length, and a bound on it touches more
rows as answers grow. This measures both on one model:

* a lab base (``--model``, default ``lab-base-cold``; its answers stay under 64 tokens), or with
  ``--real-widths`` a random-weight Qwen2-VL-2B at its real widths and 151,936-token vocabulary cut to
  2 layers (it rarely stops, so its answers run to ``--max-tokens``), samples ``--prompts``
  held-out lab prompts x ``--group`` answers at temperature 1, up to ``--max-tokens``, through the vllm
  engine in bfloat16 (colocated where vLLM imports here: ``.venv-vllm/bin/python``; else a server);
* the trainer scores the same tokens in float32;
* per length bucket: rows, the spread (standard deviation) of each row's summed log-ratio and of the
  per-token log-ratios, and each mode's share of sampled tokens whose weight differs from the raw
  ratio, at this project's default bounds (no lower, 2 upper) and at TRL's (no lower, 3 upper).

The last line printed is one JSON object; ``--out FILE`` writes it too.

    .venv-vllm/bin/python benchmarks/is_modes.py                  # 64 prompts x 4 answers, up to 512 tokens
    .venv-vllm/bin/python benchmarks/is_modes.py --real-widths --prompts 8 --max-tokens 1024
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import tempfile
from pathlib import Path

import torch

from vlm_grpo.core import algo
from vlm_grpo.evaluation.records import heldout_samples
from vlm_grpo.models import load_for_inference
from vlm_grpo.rollout import SamplingParams, completion_logprobs, encode_prompts
from vlm_grpo.rollout.engines import EngineOptions, VLLMConfig
from vlm_grpo.rollout.engines.vllm_engine import VLLMEngine
from vlm_grpo.tasks.styles import DEFAULT

BOUNDS = {"default": (None, 2.0), "trl": (None, 3.0)}


def sampled(args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(trainer log-probs, engine log-probs, mask), each (rows, tokens), for the sampled answers."""
    if args.real_widths:  # a random-weight Qwen2-VL-2B at its real widths and vocabulary, cut in depth
        from real_shapes import Case, build

        case = Case("qwen2-vl-2b-instruct", 64, args.max_tokens, "step", "ours", "cpu", tempfile.mkdtemp(), 2, 1)
        model, processor = build(case)[:2]
        model = model.float().eval()
    else:
        model, processor = load_for_inference(args.model, device="cpu", dtype="float32")
    mode = "colocate" if importlib.util.find_spec("vllm") else "spawn"
    settings = VLLMConfig(mode=mode, dtype="bfloat16", max_model_len=args.max_tokens + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="is-modes-"))
    engine = VLLMEngine(model, processor, EngineOptions(settings=settings, dtype="float32", workdir=workdir, seed=0))
    trainer, engine_logp, masks = [], [], []
    try:
        samples = heldout_samples(args.data, args.prompts)
        for first in range(0, len(samples), args.batch):
            prompts = encode_prompts(processor, DEFAULT, samples[first : first + args.batch], torch.device("cpu"))
            done = engine.sample(prompts, SamplingParams(args.group, args.max_tokens, 1.0))
            rows = torch.arange(done.ids.size(0))
            with torch.no_grad():
                logp = completion_logprobs(model, prompts, rows, done.ids, done.mask, args.group, 1.0, "prefix")
            trainer.append(logp * done.mask)
            engine_logp.append(done.logprobs)
            masks.append(done.mask)
    finally:
        engine.close()
    width = max(t.size(1) for t in trainer)

    def padded(parts):
        return torch.cat([torch.nn.functional.pad(p, (0, width - p.size(1))) for p in parts])

    return padded(trainer), padded(engine_logp), padded(masks)


def by_length(trainer: torch.Tensor, engine: torch.Tensor, mask: torch.Tensor, edges: list[int]) -> list[dict]:
    lengths = mask.sum(1)
    out = []
    for low, high in zip(edges[:-1], edges[1:]):
        rows = (lengths > low) & (lengths <= high)
        if int(rows.sum()) < 2:
            continue
        t, e, m = trainer[rows], engine[rows], mask[rows]
        diff = (t - e) * m
        row = {
            "lengths": f"{low + 1}-{high}",
            "rows": int(rows.sum()),
            "mean_length": float(lengths[rows].float().mean()),
            "token_log_ratio_std": float(diff[m.bool()].std()),
            "row_log_ratio_std": float(diff.sum(1).std()),
        }
        for name, bounds in BOUNDS.items():
            for mode, share in algo.engine_is_changed_shares(t, e, m, *bounds).items():
                row[f"{mode}@{name}"] = share
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lab-base-cold")
    parser.add_argument("--data", default="lab-clevr")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument(
        "--real-widths", action="store_true", help="a random-weight Qwen2-VL-2B (real widths, 2 layers) for --model"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trainer, engine, mask = sampled(args)
    edges = [0, 32, 64, 128, 256, 512, 1024, 2048]
    buckets = by_length(trainer, engine, mask, [e for e in edges if e < args.max_tokens] + [args.max_tokens])
    for row in buckets:
        shares = "  ".join(f"{k} {v:.3f}" for k, v in row.items() if "@" in k)
        print(
            f"{row['lengths']:>9} tokens  {row['rows']:4d} rows  token std {row['token_log_ratio_std']:.4f}  "
            f"row std {row['row_log_ratio_std']:.4f}  {shares}"
        )
    name = "qwen2-vl-2b-instruct widths, 2 layers, random weights" if args.real_widths else args.model
    result = {"model": name, "engine_dtype": "bfloat16", "trainer_dtype": "float32", "buckets": buckets}
    result["all_rows"] = by_length(trainer, engine, mask, [0, math.inf])[0] if mask.size(0) > 1 else {}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
