"""Does a lab cluster scene need the tool? Greedy accuracy of a model on held-out cluster scenes
seen whole, against the same scenes' demonstrated crops (what `crop` returns for the cell).

    python scripts/cluster_need.py --model lab-base --data lab-clevr-cluster -n 100

Prints one JSON line per input: accuracy and answer-present rate with their 95 % Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch

from vlm_grpo.evaluation.records import EvalSummary, generate_records, heldout_samples
from vlm_grpo.models import load_for_inference
from vlm_grpo.tasks.styles import get_style
from vlm_grpo.tools import get_tool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lab-base")
    parser.add_argument("--data", default="lab-clevr-cluster")
    parser.add_argument("--style", default="r1v")
    parser.add_argument("-n", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, processor = load_for_inference(args.model, "cpu", "float32")
    style = get_style(args.style)
    samples = heldout_samples(args.data, args.n)
    cropped = []
    for sample in samples:
        (call,) = sample.calls
        shown = get_tool(call["name"]).function(sample.load_images(), **call["arguments"]).images[0]
        cropped.append(replace(sample, image=shown, calls=()))
    for name, rows in (("whole canvas", samples), ("crop of the cell", cropped)):
        records = generate_records(model, processor, style, rows, args.data, max_new_tokens=48)
        rates = EvalSummary.of(records).to_dict("", ("accuracy", "answer_present_rate"))
        print(json.dumps({"model": args.model, "data": args.data, "input": name, "n": len(rows), **rates}))


if __name__ == "__main__":
    main()
