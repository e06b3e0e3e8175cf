"""A study's measures on literal metrics and literal per-seed numbers: step counts per threshold,
pooling over seeds, seed-by-seed paired differences and how study.md prints them."""

import json

import pytest
from scipy import stats

from vlm_grpo.config import TrainConfig
from vlm_grpo.study.measures import aggregate, measure, paired
from vlm_grpo.study.runner import PlannedRun
from vlm_grpo.study.tables import markdown

EVALS = [  # held-out in-domain evaluations during training, as metrics.jsonl holds them
    (0, 0.00, 0.00),
    (10, 0.45, 0.30),
    (20, 0.55, 0.50),
    (30, 0.92, 0.71),
    (40, 0.95, 0.69),
]


def write_run(path, evals, elapsed=(5.0, 9.0)):
    path.mkdir(parents=True)
    lines = [{"step": s, "eval/a/answer_present_rate": p, "eval/a/accuracy": acc} for s, p, acc in evals]
    lines += [{"step": i + 1, "time/elapsed_s": e} for i, e in enumerate(elapsed)]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def test_measure_reads_each_threshold_from_the_logged_evaluations(tmp_path):
    scores = {"a": {"accuracy": 0.7}, "b": {"accuracy": 0.35, "generalization_ratio": 0.5}}
    m = measure(write_run(tmp_path / "r", EVALS), ["a", "b"], scores, threshold=0.7)
    assert m["steps_to_answer_present_50"] == 20 and m["steps_to_answer_present_90"] == 30
    assert m["steps_to_threshold"] == 30
    assert m["in_domain_accuracy"] == 0.7 and m["transfer_accuracy"] == 0.35 and m["generalization_ratio"] == 0.5
    assert m["wall_s"] == 9.0
    never = measure(write_run(tmp_path / "s", EVALS[:3]), ["a", "b"], scores, threshold=0.7)
    assert never["steps_to_answer_present_90"] is None and never["steps_to_threshold"] is None


def _entries(tmp_path, treated, control):
    conditions = [{"name": "inject", "injection": {"mode": "random"}}, {"name": "none"}]
    runs, measures = [], {}
    for condition, values in zip(conditions, (treated, control)):
        for seed, (acc, transfer, steps) in enumerate(values):
            name = f"{condition['name']}-seed{seed}"
            runs.append(PlannedRun(name, condition, seed, tmp_path / name, TrainConfig(max_steps=60)))
            measures[name] = {
                "in_domain_accuracy": acc,
                "transfer_accuracy": transfer,
                "generalization_ratio": transfer / acc if acc else None,
                "steps_to_answer_present_50": steps,
                "steps_to_answer_present_90": steps if seed == 0 else None,
                "steps_to_threshold": steps,
                "wall_s": 60.0 + seed,
            }
    return aggregate(conditions, runs, measures, eval_n=200)


def test_paired_differences_seed_by_seed(tmp_path):
    treated = [(0.80, 0.55, 20), (0.78, 0.60, None), (0.81, 0.50, 30)]
    control = [(0.79, 0.65, 40), (0.80, 0.62, 50), (0.77, 0.61, None)]
    entries = _entries(tmp_path, treated, control)
    assert entries[0]["steps_to_threshold"]["reached"] == 2 and entries[1]["steps_to_threshold"]["reached"] == 2
    assert entries[0]["steps_to_threshold"]["mean"] == 25
    (pair,) = paired(entries, [["inject", "none"]])
    assert pair["seeds"] == [0, 1, 2] and pair["treated"] == "inject"
    transfer = pair["transfer_accuracy"]
    assert transfer["values"] == pytest.approx([-0.10, -0.02, -0.11]) and transfer["n"] == 3
    assert transfer["mean"] == pytest.approx(-0.23 / 3)
    assert transfer["p_t"] == pytest.approx(stats.ttest_rel([0.55, 0.60, 0.50], [0.65, 0.62, 0.61]).pvalue)
    lo, hi = transfer["ci"]
    assert lo < transfer["mean"] < hi < 0.05
    # A step count pairs only the seeds where both conditions reached the threshold: seed 0 alone.
    steps = pair["steps_to_threshold"]
    assert steps["n"] == 1 and steps["values"] == [-20.0] and steps["ci"] is None
    with pytest.raises(ValueError, match="unknown conditions: nope"):
        paired(entries, [["inject", "nope"]])


def test_study_md_names_thresholds_and_data_set_and_prints_the_pairs(tmp_path):
    treated = [(0.80, 0.55, 20), (0.78, 0.60, None), (0.81, 0.50, 30)]
    control = [(0.79, 0.65, None), (0.80, 0.62, None), (0.77, 0.61, None)]
    entries = _entries(tmp_path, treated, control)
    study = {"preset": "p", "model": "m", "max_steps": 60, "seeds": 3, "eval_n": 200, "in_domain": "lab-clevr"}
    study |= {"transfer": ["lab-superclevr"], "threshold": 0.7, "conditions": entries}
    study["pairs"] = paired(entries, [["inject", "none"]])
    md = markdown(study)
    header = next(line for line in md.splitlines() if line.startswith("| condition |"))
    assert "steps to 50% answer-present on lab-clevr" in header and "steps to 70% accuracy on lab-clevr" in header
    # Kaplan-Meier: the seed that never got there is censored at the 60-step budget, not dropped, and
    # no interval runs past the budget or below 0 (the mean of the two that did, 25 ± 64, would).
    assert "30 [20, >60] (2/3)" in md and "not reached (0/3)" in md and "[-39, 89]" not in md
    # 90 % answer-present: one seed of three reached it at step 20, so the median lies past the budget
    assert "| >60 [20, >60] (1/3) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| inject - none |"))
    assert "-7.7 pts [-19.9, +4.6], p 0.115" in row and row.endswith("| - | - |")


def test_seeds_that_all_score_alike_get_a_pooled_wilson_interval_not_a_zero_width_one(tmp_path):
    from vlm_grpo.core.statistics import wilson_interval

    entries = _entries(tmp_path, [(0.0, 0.0, None)] * 3, [(0.0, 0.0, None)] * 3)
    accuracy = entries[0]["in_domain_accuracy"]
    assert accuracy["ci"] == list(wilson_interval(0, 600)) and accuracy["ci_kind"] == "wilson"
    assert 0 < accuracy["ci"][1] < 0.01
    (pair,) = paired(entries, [["inject", "none"]])
    study = {"preset": "p", "model": "m", "max_steps": 60, "seeds": 3, "eval_n": 200, "in_domain": "a"}
    study |= {"transfer": ["b"], "threshold": 0.5, "conditions": entries, "pairs": [pair]}
    md = markdown(study)
    assert "0.0% ± 0.3% [0.0%, 0.6%]" in md and "+0.0 pts (every pair)" in md and "[+0.0, +0.0]" not in md
