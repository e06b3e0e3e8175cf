"""Where a trained policy looks: for each run's final greedy evaluation on a lab cluster data set,
how many answers cropped the cell that holds the scene (the box's centre inside it), how many
cropped another cell, how many did not call, and how many of each were correct; with the boxes
called most often.

    python scripts/tool_cells.py runs/study-tools/runs/inject-seed0 runs/study-tools/runs/none-seed0

Prints one JSON line per run and data set.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from vlm_grpo.evaluation.records import heldout_samples
from vlm_grpo.tools import get_tools
from vlm_grpo.tools.calls import CLOSE, CallError, parse_call


def first_box(transcript: str, tools) -> list | None:
    """The box of the conversation's first call, or None when it has no well-formed one."""
    end = transcript.find(CLOSE)
    if end < 0:
        return None
    try:
        return parse_call(transcript[: end + len(CLOSE)], tools).arguments.get("box")
    except CallError:
        return None


def inside(box: list, cell: list) -> bool:
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return cell[0] <= x <= cell[2] and cell[1] <= y <= cell[3]


def count(records: list[dict], cells: dict[str, list], tools) -> dict:
    tally = {kind: [0, 0] for kind in ("right_cell", "wrong_cell", "no_valid_call")}
    boxes: Counter = Counter()
    for record in records:
        box = first_box(record.get("transcript", ""), tools) if record["tool_calls"] else None
        if box is None:
            kind = "no_valid_call"
        else:
            kind = "right_cell" if inside(box, cells[record["sample_id"]]) else "wrong_cell"
        tally[kind][0] += 1
        tally[kind][1] += bool(record["correct"])
        if box is not None:
            boxes[json.dumps(box)] += 1
    return {
        "n": len(records),
        **{kind: {"answers": n, "correct": right} for kind, (n, right) in tally.items()},
        "top_boxes": boxes.most_common(3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders with final_eval/records.jsonl")
    parser.add_argument("--tool", default="crop")
    args = parser.parse_args()
    tools = get_tools([args.tool])
    cells: dict[str, list] = {}
    for run in args.runs:
        path = run / "final_eval" / "records.jsonl"
        if not path.is_file():
            parser.error(f"{path} does not exist: evaluate the run first")
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for data in sorted({record["dataset"] for record in records}):
            chosen = [record for record in records if record["dataset"] == data]
            if any(record["sample_id"] not in cells for record in chosen):
                for sample in heldout_samples(data, len(chosen)):
                    if sample.calls:
                        cells[sample.id] = sample.calls[0]["arguments"]["box"]
            missing = [record["sample_id"] for record in chosen if record["sample_id"] not in cells]
            if missing:
                parser.error(f"{data}: no demonstrated cell for {missing[0]}: not a lab cluster data set")
            print(json.dumps({"run": str(run), "data": data, **count(chosen, cells, tools)}))


if __name__ == "__main__":
    main()
