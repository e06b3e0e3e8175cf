"""Does a lab cluster scene need the tool, and does a base know how to call it? Greedy accuracy of a
model on held-out cluster scenes seen whole, against the same scenes' demonstrated crops (what
`crop` returns for the cell); with --tools, also how the base calls `crop`: asked where the objects
are (the grounding question the tool-aware base learnt the call from: a valid call, and the right
cell), and asked to count with the tool offered (how often a sampled answer calls it: the tool-use
cold start).

    python scripts/cluster_need.py --model lab-base --data lab-clevr-cluster -n 100
    python scripts/cluster_need.py --model lab-base-tools --data lab-clevr-cluster -n 200 --tools

Prints one JSON line per input: rates with their 95 % Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from vlm_grpo.core.statistics import wilson_interval
from vlm_grpo.evaluation.records import EvalSummary, generate_records, heldout_samples, opened_engine, sample_records
from vlm_grpo.lab.clusters import LOCATE_QUESTION
from vlm_grpo.models import load_for_inference
from vlm_grpo.tasks.styles import DEFAULT, get_style
from vlm_grpo.tools import get_tool, get_tools
from vlm_grpo.tools.calls import CallError, parse_call


def rate(hits: int, n: int) -> dict:
    low, high = wilson_interval(hits, n)
    return {"value": round(hits / n, 4), "ci": [round(low, 4), round(high, 4)], "n": n}


def locate(model, processor, samples, data: str) -> dict:
    """Asked where the objects are, with `crop` offered (greedy): valid calls and calls of the right cell."""
    tools = get_tools(["crop"])
    asked = [replace(sample, question=LOCATE_QUESTION) for sample in samples]
    records = generate_records(model, processor, DEFAULT.with_tools(tools), asked, data, max_new_tokens=96)
    valid = right = 0
    for record, sample in zip(records, samples):
        try:
            call = parse_call(record["completion"], tools)
        except CallError:
            continue
        valid += 1
        right += call.arguments["box"] == sample.calls[0]["arguments"]["box"]
    return {"valid_call_rate": rate(valid, len(samples)), "right_cell_rate": rate(right, len(samples))}


def sampled_calls(model, processor, style, samples, data: str, max_new_tokens: int) -> dict:
    """Asked to count with `crop` offered, sampled at T = 1 (8 per scene, two turns): how often an
    answer calls it, and the accuracy."""
    with opened_engine("hf", model, processor, tools=["crop"], max_turns=2) as engine:
        records = sample_records(
            engine,
            style.with_tools(engine.tools),
            samples,
            data,
            group_size=8,
            temperature=1.0,
            max_new_tokens=max_new_tokens,
        )
    calls = sum(r["tool_calls"] > 0 for r in records)
    summary = EvalSummary.of(records).to_dict("", ("accuracy", "style_format_rate"))
    return {"call_rate": rate(calls, len(records)), **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lab-base")
    parser.add_argument("--data", default="lab-clevr-cluster")
    parser.add_argument("--style", default="r1v")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--tools", action="store_true", help="also measure how the model calls crop")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the whole conversation, with --tools")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, processor = load_for_inference(args.model, "cpu", "float32")
    style = get_style(args.style)
    samples = heldout_samples(args.data, args.n)
    cropped = []
    for sample in samples:
        (call,) = sample.calls
        shown = get_tool(call["name"]).function(sample.load_images(), **call["arguments"]).images[0]
        cropped.append(replace(sample, image=shown, calls=()))
    head = {"model": args.model, "data": args.data, "n": len(samples)}
    for name, rows in (("whole canvas", samples), ("crop of the cell", cropped)):
        records = generate_records(model, processor, style, rows, args.data, max_new_tokens=48)
        rates = EvalSummary.of(records).to_dict("", ("accuracy", "answer_present_rate"))
        print(json.dumps({**head, "input": name, **rates}))
    if args.tools:
        print(
            json.dumps(
                {
                    **head,
                    "input": "where are the objects? (crop offered, greedy)",
                    **locate(model, processor, samples, args.data),
                }
            )
        )
        found = sampled_calls(model, processor, style, samples, args.data, args.max_new_tokens)
        print(json.dumps({**head, "input": "count, crop offered (T=1, 8 each)", **found}))


if __name__ == "__main__":
    main()
