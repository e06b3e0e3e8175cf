"""Where a trained policy looks: for each run's final greedy evaluation on a lab cluster data set,
how many conversations cropped the cell that holds the scene (at least half of the crop inside
it), how many cropped elsewhere, how many made no valid call, and of each how many answered and how
many were correct; with the boxes called most often.

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
    """At least half of the box lies in the cell (a box across two cells is in neither)."""
    width, height = min(box[2], cell[2]) - max(box[0], cell[0]), min(box[3], cell[3]) - max(box[1], cell[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return area > 0 and width > 0 and height > 0 and 2 * width * height >= area


def count(records: list[dict], cells: dict[str, list], tools) -> dict:
    tally = {kind: {"answers": 0, "answered": 0, "correct": 0} for kind in ("right_cell", "elsewhere", "no_valid_call")}
    boxes: Counter = Counter()
    for record in records:
        if record.get("tool_calls", 0) and "transcript" not in record:
            raise ValueError(f"{record['sample_id']}: the record has no transcript: evaluate the run again")
        box = first_box(record["transcript"], tools) if record.get("tool_calls", 0) else None
        if box is None:
            kind = "no_valid_call"
        else:
            kind = "right_cell" if inside(box, cells[record["sample_id"]]) else "elsewhere"
            boxes[json.dumps(box)] += 1
        tally[kind]["answers"] += 1
        tally[kind]["answered"] += bool(record["answer_present"])
        tally[kind]["correct"] += bool(record["correct"])
    return {"n": len(records), **tally, "top_boxes": boxes.most_common(3)}


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
            try:
                counted = count(chosen, cells, tools)
            except ValueError as error:
                parser.error(f"{run}: {error}")
            print(json.dumps({"run": str(run), "data": data, **counted}))


if __name__ == "__main__":
    main()
