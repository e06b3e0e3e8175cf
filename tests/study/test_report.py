"""Tests for vlm_grpo.report on synthetic run directories."""

import json
import math
import re

import pytest
from PIL import Image

from vlm_grpo.study.figures import plot_cross_domain
from vlm_grpo.study.report import write_report
from vlm_grpo.study.runs import Run, load_run, smooth


def _logistic(step: int, mid: float, slope: float = 0.15) -> float:
    return 1.0 / (1.0 + math.exp(-slope * (step - mid)))


def _write_run(root, name, mode, np_mid, acc_mid, seed, steps=60, with_config=True):
    run_dir = root / name
    run_dir.mkdir()
    lines = []
    for step in range(steps):
        wiggle = 0.03 * math.sin(step * 1.7 + seed)
        np_rate = min(1.0, max(0.0, _logistic(step, np_mid) + wiggle))
        acc = 0.8 * _logistic(step, acc_mid) * np_rate
        rec = {
            "step": step,
            "reward/mean": acc + 0.1 * np_rate,
            "rollout/answer_present_rate": np_rate,
            "rollout/accuracy": acc,
            "rollout/format_rate": np_rate,
            "groups/frac_zero_std": 1 - np_rate,
            "injection/rate": 0.5 if mode == "random" else 0.0,
            "time/elapsed_s": 3.0 * step,
        }
        if step % 5 == 0:
            rec["eval/clevr/accuracy"] = acc
            rec["eval/clevr/answer_present_rate"] = np_rate
            rec["eval/superclevr/accuracy"] = 0.6 * acc
        lines.append(json.dumps(rec))
    lines.append(json.dumps({"final": True, "note": "no step key: ignored by series"}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if with_config:
        (run_dir / "config.yaml").write_text(
            f"name: {name}\nseed: {seed}\nprompt:\n  style: plain\ninjection:\n  mode: {mode}\n  schedule: constant\n"
        )
    return run_dir


STUDY = {
    "preset": "p",
    "in_domain": "clevr",
    "transfer": ["superclevr"],
    "max_steps": 120,
    "conditions": [
        {
            "name": "plain+inject",
            "prompt_style": "plain",
            "injection": "random",
            "seeds": [0, 1, 2],
            "in_domain_accuracy": {"mean": 0.9, "ci": [0.87, 0.93], "values": [0.88, 0.9, 0.92]},
            "transfer_accuracy": {"mean": 0.30, "ci": [0.25, 0.35], "values": [0.28, 0.3, 0.32]},
            "steps_to_threshold": {"mean": 40, "ci": [35, 45], "values": [38, 40, 42]},
            "steps_to_answer_present_90": {"mean": 30, "ci": [20, 40], "values": [20, 30, 40], "reached": 3},
            "wall_s": {"mean": 3600, "ci": [3500, 3700], "values": [3550, 3600, 3650]},
        },
        {
            "name": "plain+none",
            "prompt_style": "plain",
            "injection": "none",
            "seeds": [0],
            "in_domain_accuracy": {"mean": 0.88, "ci": [0.88, 0.88], "values": [0.88]},
            "transfer_accuracy": {"mean": 0.48, "ci": [0.48, 0.48], "values": [0.48]},
            "steps_to_threshold": {"mean": 100, "ci": [100, 100], "values": [100]},
            "steps_to_answer_present_90": {"mean": None, "ci": None, "values": [None], "reached": 0},
            "wall_s": {"mean": 5000, "ci": [5000, 5000], "values": [5000]},
        },
    ],
}

ASSESSMENT = {
    "plain": {
        "answer_present_rate": 0.14,
        "accuracy": 0.05,
        "greedy_accuracy": 0.06,
        "answer_present_rate_ci": [0.085, 0.221],
        "accuracy_ci": [0.02, 0.11],
    },
    "r1v": {
        "answer_present_rate": 0.99,
        "accuracy": 0.40,
        "greedy_accuracy": 0.45,
        "answer_present_rate_ci": [0.95, 1.0],
    },
}


@pytest.fixture
def run_dirs(tmp_path):
    return [
        _write_run(tmp_path, "inject_s0", "random", np_mid=10, acc_mid=25, seed=0),
        _write_run(tmp_path, "none_s0", "none", np_mid=25, acc_mid=40, seed=0),
        _write_run(tmp_path, "none_s1", "none", np_mid=28, acc_mid=42, seed=1),
    ]


def _assert_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()


def test_write_report_full(tmp_path, run_dirs):
    study = tmp_path / "study.json"
    study.write_text(json.dumps(STUDY))
    assessment = tmp_path / "assessment.json"
    assessment.write_text(json.dumps(ASSESSMENT))
    out = tmp_path / "report"
    md_path = write_report(run_dirs, out, study_json=study, assessment_json=assessment)
    assert md_path == out / "report.md"
    md = md_path.read_text()
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    expected = {"learning_curves.png", "injection_vs_none.png", "cross_domain.png", "baseline.png"}
    expected |= {"speed_vs_transfer.png", "condition_curves.png"}
    assert expected <= set(pngs)
    assert sum(p.startswith("two_phase_") for p in pngs) == 3
    for name in pngs:
        _assert_png(out / name)
    assert "Skipped" not in md
    # run summary table: one row per run, thresholds from stats.steps_to_threshold
    assert md.count("| inject_s0 (") == 1 and md.count("| none_s1 (") == 1
    assert "eval clevr acc" in md and "eval superclevr acc" in md
    # baseline table carries the decision framework
    assert "5-15%" in md and "Works well" in md


def test_write_report_skips_missing_inputs(tmp_path):
    run = _write_run(tmp_path, "only", "none", np_mid=20, acc_mid=30, seed=0, with_config=False)
    md = write_report([run], tmp_path / "out").read_text()
    assert "learning_curves.png" in md and "two_phase_0_only.png" in md
    assert md.count("_Skipped:") == 3  # injection comparison, cross-domain, baseline
    assert "no study.json given" in md and "no assessment.json given" in md
    _assert_png(tmp_path / "out" / "learning_curves.png")


def test_load_run_reads_config_and_metrics(run_dirs):
    run = load_run(run_dirs[0])
    assert isinstance(run, Run)
    assert run.name == "inject_s0"
    assert run.injection_mode == "random"
    assert "injection.mode=random" in run.label and "seed=0" in run.label
    assert len(run.metrics) == 61
    steps, vals = run.series("eval/clevr/accuracy")
    assert steps == list(range(0, 60, 5)) and len(vals) == 12
    assert run.eval_datasets == ["clevr", "superclevr"]


def test_load_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n\n{"step": 1, oops}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 3"):
        load_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2"):
        load_run(tmp_path)


def test_smooth():
    assert smooth([1.0, 2.0, 3.0], 1) == [1.0, 2.0, 3.0]
    assert smooth([1.0, 2.0, 3.0, 4.0], 3) == pytest.approx([1.5, 2.0, 3.0, 3.5])
    out = smooth([1.0, None, 3.0, 5.0], 3)
    assert out[1] is None
    assert out == pytest.approx([1.0, None, 4.0, 4.0])
    assert smooth([], 5) == []


def test_cross_domain_from_runs(tmp_path, run_dirs):
    runs = [load_run(d) for d in run_dirs]
    _assert_png(plot_cross_domain(runs, tmp_path / "xd.png"))


def _study(seeds, in_domain, transfer, ci=None):
    condition = {"name": "a", "in_domain_accuracy": {"mean": 0.5}, "transfer_accuracy": {"mean": 0.5}}
    diff = {"mean": in_domain, "ci": ci}
    return {
        "eval_n": 200,
        "eval_steps": 20,
        "conditions": [condition, {**condition, "name": "b"}],
        "pairs": [
            {
                "treated": "a",
                "control": "b",
                "seeds": list(range(seeds)),
                "in_domain_accuracy": diff,
                "transfer_accuracy": {"mean": transfer, "ci": ci},
            }
        ],
    }


def test_what_it_shows_sets_one_seed_against_the_held_out_noise():
    from vlm_grpo.study.report import what_it_shows

    # Two accuracies of 50 % on 200 samples each: 1.96 x sqrt(2 x 0.25 / 200) = 9.8 points.
    text = "\n".join(what_it_shows(_study(1, 0.05, -0.12)))
    assert "in-domain +5.0 points, within the held-out noise of ±9.8" in text
    assert "transfer -12.0 points, more than the held-out noise of ±9.8" in text
    assert "One seed per condition" in text and "every 20 steps" in text


def test_what_it_shows_reads_intervals_over_seeds():
    from vlm_grpo.study.report import what_it_shows

    text = "\n".join(what_it_shows(_study(5, 0.05, -0.12, ci=[-0.01, 0.11])))
    assert "in-domain +5.0 points [-1.0, +11.0], not resolved" in text
    assert "over 5 paired seeds" in text
