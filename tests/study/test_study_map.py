"""The injection map on literal run folders: readings, comparisons, tables, per-seed values, heat map."""

import json

import pytest
import yaml

from vlm_grpo.core.statistics import holm
from vlm_grpo.study.map_measures import STEP_READINGS, arm_summary, compare, scene_inclusive, step_readings
from vlm_grpo.study.map_report import against, build, factor_rows, ratio_text, steps_text, tables, write
from vlm_grpo.study.measures import completions_sampled, teacher_compute
from vlm_grpo.study.runner import find_preset, load_preset, plan

PRESET = {
    "seeds": 2,
    "base": {"model": "lab-base-cold"},
    "conditions": [
        {"name": "central-none", "cell": "central", "arm": "none", "injection": {"mode": "none"}},
        {"name": "central-random", "cell": "central", "arm": "random", "injection": {"mode": "random"}},
        {"name": "b1-none", "cell": "b1", "arm": "none", "injection": {"mode": "none"}},
        {"name": "b1-random", "cell": "b1", "arm": "random", "injection": {"mode": "random"}},
    ],
}


def _run(folder, prompts, present, evals, scenes):
    """A finished run: config, per-step sampled rates, held-out evaluations, final per-scene records."""
    folder.mkdir(parents=True)
    cfg = {
        "model": "lab-base-cold",
        "prompts_per_step": prompts,
        "num_generations": 8,
        "learning_rate": 1e-5,
        "max_steps": len(present),
        "data": {"eval": ["lab-clevr", "lab-superclevr"], "eval_steps": 2},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = [
        {
            "step": i + 1,
            "reward/mean": p,
            "rollout/answer_present_rate": p,
            "rollout/accuracy": p * 0.8,
            "time/elapsed_s": 10.0 * (i + 1),
        }
        for i, p in enumerate(present)
    ]
    for step, (ap, acc) in evals.items():
        records.append({"step": step, "eval/lab-clevr/answer_present_rate": ap, "eval/lab-clevr/accuracy": acc})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "summary.json").write_text("{}")
    final = folder / "final_eval"
    final.mkdir()
    rows = [
        {"dataset": ds, "sample_id": f"s{j}", "correct": bit == "1"}
        for ds, bits in zip(("lab-clevr", "lab-superclevr"), scenes)
        for j, bit in enumerate(bits)
    ]
    (final / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_step_readings_on_sampled_rows_and_the_grid():
    records = [{"step": s, "rollout/answer_present_rate": v, "rollout/accuracy": v} for s, v in [(1, 0.5), (2, 0.95)]]
    records.append({"step": 2, "eval/x/answer_present_rate": 0.92, "eval/x/accuracy": 0.6})
    out = step_readings(records, "x", 32)
    assert out == {
        "sampled_present_90": 2,
        "sampled_accuracy_70": 2,
        "heldout_present_90": 2,
        "heldout_accuracy_70": None,
        "window": 1,
    }
    assert step_readings(records, "x", 8)["sampled_present_90"] is None  # window 4: too few steps


def test_scene_inclusive_interval_adds_the_scene_draw():
    out = scene_inclusive(["1100", "1110"], ["1000", "1000"])
    assert out["mean"] == pytest.approx(0.375)
    # per seed 0.25, 0.5: var/n = 0.03125 / 2; per scene 0, 1, 0.5, 0: var 0.22917 / 4
    half = 12.7062 * ((0.03125 / 2 + 0.2291667 / 4) ** 0.5)
    assert out["ci"] == pytest.approx([0.375 - half, 0.375 + half], rel=1e-4)
    with pytest.raises(ValueError):
        scene_inclusive(["11"], ["1"])


def test_map_from_literal_runs(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump(PRESET))
    study = tmp_path / "study"
    slow, fast = [0.0, 0.2, 0.5, 1.0], [0.5, 1.0, 1.0, 1.0]
    for seed, scenes_none, scenes_inj in (
        (0, ("1100", "1100"), ("1110", "1000")),
        (1, ("1000", "1100"), ("1100", "0100")),
    ):
        _run(study / "runs" / f"central-none-seed{seed}", 4, slow, {2: (0.5, 0.5), 4: (1.0, 0.8)}, scenes_none)
        _run(study / "runs" / f"central-random-seed{seed}", 4, fast, {2: (1.0, 0.8), 4: (1.0, 0.8)}, scenes_inj)
        _run(study / "runs" / f"b1-none-seed{seed}", 1, [0.0] * 4, {2: (0.0, 0.0), 4: (0.1, 0.1)}, scenes_none)
        _run(study / "runs" / f"b1-random-seed{seed}", 1, [1.0] * 4, {2: (1.0, 0.8), 4: (1.0, 0.8)}, scenes_inj)
    built = write(study, tmp_path / "out", preset=preset, advice=tmp_path / "advice.json")
    central = next(c for c in built["comparisons"] if c["cell"] == "central")
    assert central["speedup_sampled_present_90"]["ratios"] == [2.0, 2.0]  # step 4 against step 2
    b1 = next(c for c in built["comparisons"] if c["cell"] == "b1")
    # window 4 (8 rows a step): injected rows reach it at step 4, plain GRPO never (censored at 4)
    assert (
        b1["speedup_sampled_present_90"]["kinds"] == [">=", ">="] and b1["speedup_sampled_present_90"]["ratio"] == 1.0
    )
    assert central["transfer_difference"]["mean"] == pytest.approx(-0.25)
    assert "p_holm" in central["in_domain_difference"]
    md = (tmp_path / "out" / "map.md").read_text()
    assert "2.00x" in md and ">= 1.00x" in md and "[]" not in md
    saved = json.loads((tmp_path / "out" / "map.json").read_text())
    assert len(saved["runs"]) == 8 and saved["runs"][0]["transfer_scenes"] == "1100"
    assert saved["runs"][0]["samples"] == 4 * 8 * 4 and "teacher_passes" not in saved["runs"][0]
    assert "against" not in saved and "teacher passes" not in md
    assert (tmp_path / "out" / "map-heatmap.png").stat().st_size > 0
    advice = json.loads((tmp_path / "advice.json").read_text())
    assert {c["cell"] for c in advice["cells"]} == {"central", "b1"}
    assert factor_rows(saved["runs"]) == [
        ("base answer-present rate", "2.2%", "central"),
        ("prompts per step", "1", "b1"),
        ("prompts per step", "4", "central"),
        ("group size G", "8", "central"),
        ("learning rate", "1e-05", "central"),
    ]


def test_texts_print_no_empty_intervals_and_never_pass_the_budget():
    assert steps_text({"values": [20, None, 40], "range": (20, ">50"), "median": 40.0}, 3) == "40 [20->50] (2/3)"
    assert steps_text({"values": [None, None, 40], "range": (40, ">50"), "median": None}, 3) == ">50 [40->50] (1/3)"
    assert steps_text({"values": [30], "range": (30, "30"), "median": 30.0}, 1) == "30 (1 seed)"
    assert ratio_text({"ratio": 2.0, "ci": None, "kind": "=", "kinds": ["="], "n": 1}) == "2.00x (1 seed)"
    assert (
        ratio_text({"ratio": None, "ci": None, "kind": "=", "kinds": ["both censored"], "n": 0}) == "- (both censored)"
    )


def test_the_map_preset_plans_every_cell(tmp_path):
    spec = load_preset(find_preset("map"))
    runs = plan(spec, tmp_path, 1, progress=False)
    cfgs = {r.condition["cell"]: r.cfg for r in runs}
    assert cfgs["b1"].prompts_per_step == 1 and cfgs["b16"].prompts_per_step == 16
    assert cfgs["g4"].num_generations == 4 and cfgs["g16"].num_generations == 16
    assert cfgs["lr3e-6"].learning_rate == 3e-6 and cfgs["mild"].model == "lab-base"
    assert {r.condition["arm"] for r in runs} == {"none", "random", "rate", "sampled"}
    sampled = {r.condition["cell"]: r.cfg for r in runs if r.condition["arm"] == "sampled"}
    assert set(sampled) == {"central", "b16", "g4"} and all(c.group_stats == "sampled" for c in sampled.values())
    assert sampled["b16"].prompts_per_step == 16 and sampled["g4"].num_generations == 4
    assert all(r.cfg.max_steps == spec["base"]["max_steps"] for r in runs)


def _reading(arm, seed, steps, in_domain, transfer, wall=10.0, cell="c"):
    """A run's readings as map.json keeps them (`read_run`), written out by hand."""
    return {
        "cell": cell,
        "arm": arm,
        "seed": seed,
        "model": "lab-base-cold",
        "base_rate": 0.022,
        "prompts_per_step": 4,
        "num_generations": 8,
        "learning_rate": 1e-5,
        "budget": 50,
        "grid": 10,
        "window": 1,
        "samples": 1600,
        "wall_s": wall,
        **{name: steps for name, *_ in STEP_READINGS},
        "in_domain_scenes": in_domain,
        "transfer_scenes": transfer,
        "in_domain_accuracy": in_domain.count("1") / len(in_domain),
        "transfer_accuracy": transfer.count("1") / len(transfer),
    }


RUNS = [  # one cell, three seeds: plain GRPO, injection, distillation
    *(_reading("none", s, 40, "1100", "1110") for s in range(3)),
    _reading("random", 0, 20, "1110", "1000"),
    _reading("random", 1, 20, "1111", "1100"),
    _reading("random", 2, 25, "1110", "1000"),
    _reading("distill", 0, 40, "1100", "1100", wall=30.0),
    _reading("distill", 1, 50, "1000", "1000", wall=30.0),
    _reading("distill", 2, None, "1100", "1000", wall=30.0),
]


def test_an_arm_against_another_control_than_none():
    out = compare(RUNS, "c", "distill", control="random")
    assert out["control"] == "random" and out["seeds"] == [0, 1, 2]
    # distill - random, seed by seed: in-domain 2/4 - 3/4, 1/4 - 4/4, 2/4 - 3/4
    assert out["in_domain_difference"]["values"] == pytest.approx([-0.25, -0.75, -0.25])
    assert out["transfer_difference"]["values"] == pytest.approx([0.25, -0.25, 0.0])
    assert out["speedup_sampled_present_90"]["ratios"][:2] == pytest.approx([0.5, 0.4])  # random / distill
    assert out["wall_ratio"] == pytest.approx(3.0)
    plain = compare(RUNS, "c", "random")
    assert "control" not in plain and plain == compare(RUNS, "c", "random", control="none")
    with pytest.raises(ValueError, match="no seed ran both 'distill' and 'rate'"):
        compare(RUNS, "c", "distill", control="rate")


def test_a_table_against_a_control_takes_holm_over_its_own_tests():
    runs = RUNS + [{**r, "cell": "d"} for r in RUNS if r["arm"] != "distill"]  # d: no distill arm
    table = against(runs, "random")
    assert [(c["cell"], c["arm"]) for c in table] == [("c", "distill")]  # none, and the control, are not rows
    runs += [{**r, "cell": "d", "arm": "rate"} for r in RUNS if r["arm"] == "distill"]
    table = against(runs, "random")
    assert [(c["cell"], c["arm"]) for c in table] == [("c", "distill"), ("d", "rate")]
    tests = [c[f"{k}_difference"] for c in table for k in ("in_domain", "transfer")]
    assert [t["p_holm"] for t in tests] == pytest.approx(holm([t["p_t"] for t in tests]))
    built = build(runs, ["random"])
    assert built["against"]["random"] == table and "against" not in build(runs)
    # the first table's family is its own: injection against none, in both cells
    first = [(c["cell"], c["arm"]) for c in built["comparisons"]]
    assert first == [("c", "random"), ("c", "distill"), ("d", "random"), ("d", "rate")]
    lines = tables(built, [("f", "1", "c"), ("f", "2", "d")])
    below = lines[next(i for i, line in enumerate(lines) if line.startswith("Against `random`")) :]
    assert "wall time, arm / random" in below[2] and below[4].startswith("| c | distill | ")


def test_completions_sampled_and_the_teachers_compute_from_the_metrics():
    records = [
        {"step": 1, "sft/groups": 4},  # a warm-up step samples nothing
        {"step": 2, "reward/mean": 0.1, "distill/coef": 1.0, "distill/teacher_tokens": 90.0, "time/teacher_s": 0.25},
        {"step": 3, "reward/mean": 0.2, "sampling/batches_drawn": 3, "distill/coef": 0.5, "time/teacher_s": 0.25},
        {"step": 4, "reward/mean": 0.3, "distill/coef": 0.0, "distill/teacher_tokens": 0.0, "time/teacher_s": 0.0},
    ]
    assert completions_sampled(records, 8) == 8 + 24 + 8
    assert teacher_compute(records, 8) == {"teacher_passes": 16, "teacher_tokens": 90, "teacher_s": 0.5}
    assert teacher_compute(records[:1], 8) == {}  # no teacher: nothing logged, nothing spent
    runs = [{**RUNS[-1], **teacher_compute(records, 8)}, RUNS[0]]
    summary = arm_summary(runs)
    assert summary["teacher_passes"] == 8 and summary["teacher_s"] == 0.25  # a run without a teacher spent 0
    assert "teacher_passes" not in arm_summary(RUNS[:3])
