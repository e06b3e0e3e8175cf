"""Advice from the measured map: the nearest cell along the map's grid, and its numbers in words."""

import json

from vlm_grpo.evaluation.assess import advice_lines, style_assessment
from vlm_grpo.evaluation.map_advice import ADVICE_FILE, map_advice, nearest_cell


def _cell(name, rate, b, g, lr=1e-5, arm="random", speed=None, accuracy=None, transfer=(-0.05, None)):
    return {
        "cell": name, "arm": arm, "base_rate": rate, "prompts_per_step": b, "num_generations": g,
        "learning_rate": lr, "model": "m", "seeds": 3,
        "speedup_sampled_present_90": speed or {"ratio": None, "ci": None, "kind": None},
        "speedup_heldout_accuracy_70": accuracy or {"ratio": 1.0, "ci": [0.9, 1.1], "kind": "="},
        "transfer_difference": {"mean": transfer[0], "ci": transfer[1], "p_holm": None},
        "transfer_with_scenes": None,
    }  # fmt: skip


SLOWER = {"ratio": 0.85, "ci": [0.7, 0.95], "kind": "="}
SOONER = {"ratio": 1.4, "ci": [1.1, 1.8], "kind": ">="}
CELLS = [
    _cell("central", 0.022, 4, 8, speed=SLOWER, transfer=(-0.1, [-0.15, -0.05])),
    _cell("mild", 0.129, 4, 8, accuracy=SOONER, transfer=(-0.02, [-0.06, 0.02])),
    _cell("b1", 0.022, 1, 8),
    _cell("g16", 0.022, 4, 16),
    _cell("lr3e-5", 0.022, 4, 8, lr=3e-5),
]  # fmt: skip


def test_the_nearest_cell_counts_grid_steps_along_each_factor_at_the_study_learning_rate():
    assert nearest_cell(CELLS, 0.0, 4, 8) == "central"  # a measured 0 % is nearest the lowest rate
    assert nearest_cell(CELLS, 0.02, 4, 8) == "central"  # never the lr3e-5 cell with the same setting
    assert nearest_cell(CELLS, 0.09, 4, 8) == "mild"  # log scale: 9 % is nearer 12.9 % than 2.2 %
    assert nearest_cell(CELLS, 0.04, 4, 8) == "central"
    assert nearest_cell(CELLS, 0.02, 2, 8) == "central"  # half a grid step along B
    assert nearest_cell(CELLS, 0.02, 1, 8) == "b1"
    assert nearest_cell(CELLS, 0.03, 4, 32) == "g16"


def test_the_advice_names_the_cell_and_its_numbers_and_says_whether_injection_paid(tmp_path):
    path = tmp_path / "advice.json"
    path.write_text(json.dumps({"source": "vlm-grpo study --preset map", "cells": CELLS}))
    central = map_advice(0.03, 4, 8, path)
    assert central["cell"] == "central" and not central["injection_paid"]  # slower, and a transfer cost
    assert "nearest cell 'central' (base answer-present 2.2%, 4 prompts x G 8" in central["text"]
    assert "0.85x [0.70, 0.95] to 90 % sampled answer-present" in central["text"]
    assert "transfer -10.0 points [-15.0, -5.0]" in central["text"] and "did not pay" in central["text"]
    mild = map_advice(0.12, 4, 8, path)
    assert mild["injection_paid"] and "at least 1.40x [1.10, 1.80] to 70 % held-out accuracy" in mild["text"]
    assert map_advice(0.1, 4, 8, tmp_path / "none.json") is None


def test_a_setting_outside_the_measured_range_gets_no_cell(tmp_path):
    path = tmp_path / "advice.json"
    path.write_text(json.dumps({"source": "vlm-grpo study --preset map", "cells": CELLS}))
    far = map_advice(0.999, 4, 8, path)  # an r1v-like base: the map measured 2.2 % to 12.9 %
    assert far["cell"] is None and far["injection_paid"] is None
    assert "does not cover this setting, base answer-present 99.9% (measured 2.2% to 12.9%)" in far["text"]
    assert "G 64 (measured 8 to 16)" in map_advice(0.05, 4, 64, path)["text"]
    assert map_advice(0.05, 4, 8, path)["cell"] == "central"  # inside the range: the nearest cell


def test_assess_cites_the_shipped_map_beside_the_study_and_says_where_they_differ():
    cells = json.loads(ADVICE_FILE.read_text())["cells"]
    assert {c["cell"] for c in cells} >= {"central", "mild", "b1", "b16", "g4", "g16"}
    records = [
        {"sample_id": f"s{i // 4}", "reward": -1.0 if i % 4 else 1.0, "answer_present": i % 4 == 0,
         "correct": i % 4 == 0, "format_ok": i % 4 == 0, "strict_parsed": None}
        for i in range(40)
    ]  # fmt: skip
    out = style_assessment(records, records[::4], 4, "number", prompts_per_step=4)
    advice = out["advice"]
    assert advice["map_cell"] == map_advice(out["answer_present_rate"], 4, 4)["cell"]
    assert advice["map"].startswith("From the measured map")
    lines = [text for _, text in advice_lines({"default": out})]
    [cited] = [text for text in lines if text.startswith("measured map:")]
    assert ("differs from the study's advice" in cited) == advice["map_differs"]
