#!/usr/bin/env python
"""Where the sampler's time per token goes: fixed cost per decode call against cost per row.

Our sampler (`vlm_grpo.rollout.generation.sample_from_prefix`) on the benchmark's tiny Qwen2-VL
(`small`, random weights) at 16, 64 and 256 image tokens per prompt, 4 prompts x G rows, every
completion 32 tokens long, for 1, 8, 32 and 128 rows in the batch; milliseconds per decoded token,
the prefill left out (see `ms_per_token`). Time per token that does not grow with the rows is the
fixed cost of one decode step (Python, transformers' forward and mask building, operator
dispatch, the draw), the floor no batching removes; the growth with the rows is the arithmetic.
Medians of `--repeats` calls after a warm-up, torch.set_num_threads(`--threads`).

`--compile` also times one decode call (the model's forward alone, 32 rows) three ways: eager on
the growing cache the sampler uses, eager on transformers' `StaticCache`, and `torch.compile`d on
the static cache (the setting transformers documents for compiled decoding), with the compile time.

    python benchmarks/decode_floor.py
    python benchmarks/decode_floor.py --sizes 16 --rows 1,32 --repeats 3
    python benchmarks/decode_floor.py --sizes 16 --rows 32 --compile
    python benchmarks/decode_floor.py --lab     # the lab's sampling as the demo runs it

`--lab` times whole `sample_from_prefix` calls as the lab trains: the `lab-base` model, G 8 x 4
lab-clevr prompts (new scenes each call), up to 48 new tokens ending where the model ends them,
temperature 1; median milliseconds per call and the mean number of decode steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import step_throughput  # noqa: E402  (the sibling script: its results-file helper)

BEGIN = "<!-- BEGIN GENERATED: benchmarks/decode_floor.py -->"
NEW_TOKENS = 32
PROMPTS = 4  # rows = prompts x G: 4 prompts x rows / 4 (fewer rows: that many prompts, G = 1)


def build(tokens: int):
    import torch

    from vlm_grpo.data import Sample
    from vlm_grpo.lab.scenes import render_scene
    from vlm_grpo.models.tiny import build_tiny
    from vlm_grpo.rollout import encode_prompts
    from vlm_grpo.tasks.styles import DEFAULT

    side = int(round(tokens**0.5)) * 28  # Qwen2-VL: 28 px per merged image token
    model, processor = build_tiny(family="qwen2-vl", size="small", seed=0, image_pixels=side * side)
    samples = []
    for i in range(PROMPTS):
        image, scene = render_scene("lab-clevr", i, size=side)
        samples.append(Sample(str(i), image, scene.question, scene.count, "lab-clevr"))
    return model.eval(), processor, encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))


def ms_per_token(model, processor, prompts, rows: int, repeats: int) -> float:
    """Milliseconds per decoded token, all rows together, the prefill left out: (median time of a
    NEW_TOKENS-token call - median time of a 1-token call, which is the prefill and one draw) /
    (NEW_TOKENS - 1), the two calls alternating `repeats` times after one warm-up each."""
    import torch

    from vlm_grpo.models.families import adapter_for
    from vlm_grpo.rollout.generation import sample_from_prefix

    adapter = adapter_for(model)
    prompt_count = min(PROMPTS, rows)
    inputs = prompts.select(torch.arange(prompt_count))
    # No row ends before NEW_TOKENS: the end tokens are among the masked ids, as in step_throughput.py.
    ends = adapter.end_token_ids(processor, model)
    masked = sorted(set(adapter.vision_token_ids(model)) | set(ends))
    tail = (1.0, 1.0, 0, ends, processor.tokenizer.pad_token_id, masked)
    times: dict[int, list[float]] = {NEW_TOKENS: [], 1: []}
    for i in range(repeats + 1):
        for length in times:
            start = time.perf_counter()
            ids = sample_from_prefix(adapter, model, inputs, rows // prompt_count, length, *tail)
            if i:
                times[length].append(time.perf_counter() - start)
            assert ids.size(1) == length
    whole, first = statistics.median(times[NEW_TOKENS]), statistics.median(times[1])
    return (whole - first) / (NEW_TOKENS - 1) * 1000


def decode_call_ms(model, prompts, repeats: int) -> dict[str, float]:
    """One decode call over 32 rows (4 prompts x 8): eager with the sampler's cache, eager with
    transformers' StaticCache, compiled with it; milliseconds per call, and the compile seconds."""
    import torch
    from transformers import StaticCache

    from vlm_grpo.models.compat import with_cache
    from vlm_grpo.models.families import adapter_for
    from vlm_grpo.rollout.kv_cache import preallocate

    adapter, inputs, group = adapter_for(model), prompts.inputs, 8
    width = inputs["attention_mask"].size(1)
    attention = torch.ones(PROMPTS * group, width + 1, dtype=torch.long)
    attention[:, :width] = inputs["attention_mask"].repeat_interleave(group, dim=0)
    token = torch.zeros(PROMPTS * group, 1, dtype=torch.long)

    def timed(forward, cache, rewind) -> float:
        times = []
        for _ in range(repeats + 2):
            start = time.perf_counter()
            forward(input_ids=token, attention_mask=attention, position_ids=positions, **with_cache(cache))
            rewind(cache)
            times.append(time.perf_counter() - start)
        return statistics.median(times[2:]) * 1000

    with torch.no_grad():
        _, cache, start = adapter.prefill(model, inputs)
        positions = adapter.positions(start.repeat_interleave(group), 1)
        static = StaticCache(config=model.config, max_cache_len=width + 1)
        for layer, filled in zip(static.layers, cache.layers):
            keys, values = (t.repeat_interleave(group, dim=0) for t in (filled.keys, filled.values))
            layer.lazy_initialization(keys, values)
            layer.keys[:, :, :width], layer.values[:, :, :width] = keys, values
            layer.cumulative_length.fill_(width)
        preallocate(cache, group, 1)

        def rewind_static(c):
            for layer in c.layers:
                layer.cumulative_length.fill_(width)

        out = {"eager_ms": timed(model, cache, lambda c: c.crop(-1))}
        out["eager_static_ms"] = timed(model, static, rewind_static)
        compiled = torch.compile(model, dynamic=False)
        begin = time.perf_counter()
        compiled(input_ids=token, attention_mask=attention, position_ids=positions, **with_cache(static))
        rewind_static(static)
        out["compile_s"] = time.perf_counter() - begin
        out["compiled_static_ms"] = timed(compiled, static, rewind_static)
    return out


def lab_sampling_ms(calls: int) -> dict[str, float]:
    """Median ms per lab sampling call (see the module docstring) and the mean decode steps per call."""
    import torch

    from vlm_grpo.data import Sample
    from vlm_grpo.lab.scenes import render_scene
    from vlm_grpo.models import load_model_and_processor
    from vlm_grpo.models.families import adapter_for
    from vlm_grpo.rollout import encode_prompts
    from vlm_grpo.rollout.generation import sample_from_prefix
    from vlm_grpo.tasks.styles import DEFAULT

    model, processor = load_model_and_processor("lab-base", torch.device("cpu"), torch.float32)
    adapter = adapter_for(model.eval())
    tail = (adapter.end_token_ids(processor, model), processor.tokenizer.pad_token_id, adapter.vision_token_ids(model))
    times, steps = [], []
    for call in range(calls + 1):
        scenes = [render_scene("lab-clevr", 1000 + PROMPTS * call + i) for i in range(PROMPTS)]
        samples = [
            Sample(str(i), image, scene.question, scene.count, "lab-clevr") for i, (image, scene) in enumerate(scenes)
        ]
        inputs = encode_prompts(processor, DEFAULT, samples, torch.device("cpu")).inputs
        torch.manual_seed(call)
        start = time.perf_counter()
        ids = sample_from_prefix(adapter, model, inputs, 8, 48, 1.0, 1.0, 0, *tail)
        if call:
            times.append((time.perf_counter() - start) * 1000)
            steps.append(ids.size(1))
    return {"ms_per_call": statistics.median(times), "mean_steps": statistics.fmean(steps)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="16,64,256", help="image tokens per prompt")
    p.add_argument("--rows", default="1,8,32,128", help="rows decoded together")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="markdown file ('none': nothing)")
    p.add_argument("--compile", action="store_true", help="also time one decode call eager and compiled")
    p.add_argument("--lab", action="store_true", help="only time the lab's sampling calls (prints JSON)")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.lab:
        result = lab_sampling_ms(a.repeats)
        print(json.dumps(result))
        return result
    torch.manual_seed(0)
    sizes, rows = [int(s) for s in a.sizes.split(",")], [int(r) for r in a.rows.split(",")]
    if any(r < 1 or (r > PROMPTS and r % PROMPTS) for r in rows):
        p.error(f"--rows: 1 to {PROMPTS}, or a multiple of {PROMPTS} ({PROMPTS} prompts x G)")
    table, calls = {}, {}
    for size in sizes:
        model, processor, prompts = build(size)
        table[size] = {r: ms_per_token(model, processor, prompts, r, a.repeats) for r in rows}
        if a.compile:
            calls[size] = decode_call_ms(model, prompts, a.repeats)
    given = " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"Command: `python benchmarks/decode_floor.py{' ' + given if given else ''}`"
        f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, "
        f"torch.set_num_threads({a.threads}); median of {a.repeats} calls, {NEW_TOKENS} tokens each)",
        "",
        "| image tokens | " + " | ".join(f"ms/token, {r} rows" for r in rows) + " |",
        "|---:|" + "---:|" * len(rows),
        *(f"| {size} | " + " | ".join(f"{line[r]:.2f}" for r in rows) + " |" for size, line in table.items()),
    ]
    if calls:
        lines += [
            "",
            "One decode call, 32 rows, the model's forward alone (ms): eager on the sampler's cache / eager on "
            "transformers' StaticCache / torch.compile on the StaticCache (compile time):",
            "",
            *(
                f"- {size} image tokens: {c['eager_ms']:.2f} / {c['eager_static_ms']:.2f} / "
                f"{c['compiled_static_ms']:.2f} ms ({c['compile_s']:.0f} s to compile)"
                for size, c in calls.items()
            ),
        ]
    print("\n".join(lines))
    if a.results != "none":
        step_throughput.write_block(Path(a.results), BEGIN, "\n".join(lines))
    final = {str(s): {str(r): round(v, 3) for r, v in line.items()} for s, line in table.items()}
    if calls:
        final["decode_call"] = {str(s): {k: round(v, 3) for k, v in c.items()} for s, c in calls.items()}
    print(json.dumps(final))
    return final


if __name__ == "__main__":
    main()
