"""`vlm-grpo study` with the tiny preset: the schema of study.json, study.md, skipping and resuming runs."""

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from vlm_grpo.cli import app
from vlm_grpo.study.runner import find_preset, load_preset, plan, run_study

MEASURED = ("in_domain_accuracy", "transfer_accuracy", "steps_to_threshold", "wall_s")
# Two conditions x two seeds x two steps; a checkpoint every step so a run can resume from step 1.
FAST = ["device=cpu", "save_steps=1", "data.eval_steps=2", "data.eval_size=2", "max_completion_length=6"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = run_study("tiny", seeds=2, steps=2, out=out, n=2, overrides=FAST, progress=False)
    return out, result


def test_study_json_has_the_schema(study):
    out, result = study
    assert sorted(result["ran"]) == [
        "default-inject-seed0",
        "default-inject-seed1",
        "default-none-seed0",
        "default-none-seed1",
    ]
    data = json.loads((out / "study.json").read_text())
    assert data == result["study"]
    assert [c["name"] for c in data["conditions"]] == ["default-inject", "default-none"]
    assert data["in_domain"] == "lab-clevr" and data["transfer"] == ["lab-superclevr"] and data["max_steps"] == 2
    for c in data["conditions"]:
        assert c["prompt_style"] == "default" and c["seeds"] == [0, 1]
        assert c["injection"] == ("random" if c["name"] == "default-inject" else "none")
        for key in MEASURED:
            assert set(c[key]) >= {"mean", "ci", "values"} and len(c[key]["values"]) == 2, key
        for key in ("in_domain_accuracy", "transfer_accuracy"):
            lo, hi = c[key]["ci"]
            assert 0 <= c[key]["mean"] <= 1 and lo <= c[key]["mean"] <= hi
        assert c["steps_to_threshold"]["reached"] == sum(v is not None for v in c["steps_to_threshold"]["values"])
        assert all(v > 0 for v in c["wall_s"]["values"])
        for run_dir, steps in zip(c["runs"], c["steps_to_threshold"]["values"]):
            summary = json.loads((out / "runs" / run_dir.split("/")[-1] / "summary.json").read_text())
            assert steps == summary["steps_to_0.9/eval/lab-clevr/accuracy"]


def test_runs_evaluate_during_training_and_at_the_end(study):
    out, _ = study
    run = out / "runs" / "default-none-seed0"
    evals = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "eval/lab-clevr/accuracy" in line
    ]
    assert evals == [0, 2]
    final = json.loads((run / "final_eval" / "summary.json").read_text())
    assert final["decoding"] == "greedy" and final["n"] == 2
    assert set(final["results"][str(run / "checkpoint-2")]) == {"lab-clevr", "lab-superclevr"}


def test_study_md_and_report(study):
    out, _ = study
    md = (out / "study.md").read_text()
    assert "| condition |" in md and "in-domain accuracy" in md and "transfer accuracy" in md
    assert "| default-inject |" in md and "| default-none |" in md and "not reached (0/2)" in md
    assert (out / "report" / "report.md").is_file() and (out / "report" / "cross_domain.png").is_file()
    report = (out / "report" / "report.md").read_text()
    for figure in ("speed_vs_transfer.png", "condition_curves.png"):
        assert (out / "report" / figure).stat().st_size > 10_000 and f"]({figure})" in report
    assert "| default-inject - default-none | 2 |" in md


def test_rerun_skips_finished_runs_and_resumes_an_interrupted_one(study, tmp_path):
    out = tmp_path / "moved"
    shutil.copytree(study[0], out)  # a copy: the other tests keep the first call's files
    runs = out / "runs"
    # Simulate a run stopped after step 1: its final checkpoint and summary never got written.
    shutil.rmtree(runs / "default-none-seed1" / "checkpoint-2")
    (runs / "default-none-seed1" / "summary.json").unlink()
    mtimes = {
        p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in runs.iterdir() if p.name != "default-none-seed1"
    }
    again = run_study("tiny", seeds=2, steps=2, out=out, n=2, overrides=FAST, progress=False)
    assert again["ran"] == [] and again["resumed"] == ["default-none-seed1"]
    assert sorted(again["skipped"]) == sorted(mtimes)
    assert {name: (runs / name / "metrics.jsonl").stat().st_mtime_ns for name in mtimes} == mtimes
    steps = [
        json.loads(line)["step"] for line in (runs / "default-none-seed1" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [0, 1, 2]
    assert (runs / "default-none-seed1" / "checkpoint-2" / "model.safetensors").is_file()


def test_a_run_written_before_a_setting_existed_is_still_reused(study, tmp_path):
    out = tmp_path / "older"
    shutil.copytree(study[0], out)
    for config in (out / "runs").glob("*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        del raw["zero_stage"], raw["lora"]["load_in_4bit"]  # as an earlier version wrote it: defaults apply
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
    again = run_study("tiny", seeds=2, steps=2, out=out, n=2, overrides=FAST, progress=False)
    assert again["ran"] == [] and len(again["skipped"]) == 4


def test_a_run_written_before_keys_moved_is_reused_and_a_real_change_still_refused(study, tmp_path):
    out = tmp_path / "moved"
    shutil.copytree(study[0], out)
    for config in (out / "runs").glob("*/config.yaml"):
        raw = yaml.safe_load(config.read_text())
        raw["dtype"] = "auto"  # as the project wrote it before `dtype` and the loss-side keys moved
        raw["injection"].update(off_policy=raw.pop("off_policy"), group_stats=raw.pop("group_stats"))
        raw["injection"]["luffy_gamma"] = raw.pop("luffy_gamma")
        rate = raw["injection"].pop("rate")  # the schedules, tools and dynamic sampling as they were written
        raw["injection"].update(rate=rate["value"], schedule=rate["schedule"], initial_rate=rate["initial"])
        raw["injection"].update(prefix_ratio=raw["injection"]["prefix_ratio"]["value"], prefix_ratio_initial=None)
        raw["sft"].update(coef=raw["sft"]["coef"]["value"], schedule="constant", adaptive_low=0.3)
        raw.update(dynamic_sampling=False, dynamic_sampling_max_batches=4, max_turns=1)
        raw["tool_use"] = {key: raw["tools"].pop(key) for key in ("timeout_s", "memory_mb", "turn_penalty")}
        raw["tools"], raw["remedy_options"] = [], {}
        del raw["remedies"]
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
    again = run_study("tiny", seeds=2, steps=2, out=out, n=2, overrides=FAST, progress=False)
    assert again["ran"] == [] and len(again["skipped"]) == 4
    with pytest.raises(ValueError, match=r"different configuration \(group_stats differ\)"):
        run_study("tiny", seeds=2, steps=2, out=out, n=2, overrides=[*FAST, "group_stats=sampled"], progress=False)


def test_a_changed_budget_is_refused_for_an_existing_run(study):
    out, _ = study
    with pytest.raises(ValueError, match="different configuration"):
        run_study("tiny", seeds=1, steps=3, out=out, n=2, overrides=FAST, progress=False)


def test_seed_preset_plans_the_studys_matrix(tmp_path):
    spec = load_preset(find_preset("seed"))
    names = [c["name"] for c in spec["conditions"]]
    assert names == ["default-inject", "default-none", "r1v-inject", "r1v-none"]
    assert spec["pairs"] == [["default-inject", "default-none"], ["r1v-inject", "r1v-none"]]
    runs = plan(spec, tmp_path, seeds=1, steps=40)
    by_name = {r.name: r.cfg for r in runs}
    cfg = by_name["r1v-inject-seed0"]
    assert (
        cfg.model == "lab-base" and cfg.data.train == "lab-clevr" and cfg.data.eval == ["lab-clevr", "lab-superclevr"]
    )
    assert cfg.learning_rate == pytest.approx(1e-5) and cfg.max_steps == 40 and cfg.data.eval_steps == 10
    assert cfg.prompt.style == "r1v" and cfg.injection.mode == "random"
    assert by_name["default-none-seed0"].injection.mode == "none"
    assert plan(spec, tmp_path, seeds=1)[0].cfg.max_steps == 60


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nonexistent"], "unknown study preset 'nonexistent'"),
        (["--preset", "tiny", "injection.mode=sometimes"], "injection.mode='sometimes'"),
        (["--preset", "tiny", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(app, ["study", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_report_cli_wraps_write_report(study, tmp_path):
    out, _ = study
    run_dirs = sorted(str(p) for p in (out / "runs").iterdir())
    result = CliRunner().invoke(app, ["report", *run_dirs, "--study", str(out / "study.json"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report.md").read_text()
    assert "cross_domain.png" in md and "default-none-seed1" in md
    missing = CliRunner().invoke(app, ["report", *run_dirs, "--study", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    not_a_run = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert not_a_run.exit_code == 2 and "metrics.jsonl" in not_a_run.output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seed", "schedules", "remedies", "mc", "tools", "video"])
def test_every_shipped_preset_runs_at_two_steps(tmp_path, name):
    # A tiny model and tiny evaluations: this checks that every condition's configuration trains.
    # The tools preset keeps its own completion budget: a crop conversation must fit it whole.
    overrides = [o for o in FAST if not o.startswith("max_completion_length")] if name == "tools" else FAST
    result = run_study(
        name, seeds=1, steps=2, out=tmp_path, model="tiny-qwen2-vl", n=2, overrides=overrides, progress=False
    )
    conditions = load_preset(find_preset(name))["conditions"]
    assert sorted(result["ran"]) == sorted(f"{c['name']}-seed0" for c in conditions)


@pytest.mark.slow
def test_the_distill_preset_runs_at_two_steps(tmp_path):
    # On its own models: the teacher scores the policy's token ids, so it keeps the lab bases' tokenizer.
    result = run_study("distill", seeds=1, steps=2, out=tmp_path, n=2, overrides=FAST, progress=False)
    conditions = load_preset(find_preset("distill"))["conditions"]
    assert sorted(result["ran"]) == sorted(f"{c['name']}-seed0" for c in conditions)
    distilled = [c for c in result["study"]["conditions"] if "distill" in c["name"]]
    assert len(distilled) == 4


def test_one_seed_shows_the_runs_wilson_interval_not_a_zero_width_one(tmp_path):
    from vlm_grpo.config import TrainConfig
    from vlm_grpo.core.statistics import wilson_interval
    from vlm_grpo.study.measures import aggregate
    from vlm_grpo.study.runner import PlannedRun
    from vlm_grpo.study.tables import markdown

    condition = {"name": "none", "injection": {"mode": "none"}}
    run = PlannedRun("none-seed0", condition, 0, tmp_path, TrainConfig())
    measured = {"in_domain_accuracy": 0.75, "transfer_accuracy": 0.5, "generalization_ratio": 0.67}
    measures = {"none-seed0": {**measured, "steps_to_threshold": None, "wall_s": 10.0}}
    (entry,) = aggregate([condition], [run], measures, eval_n=200)
    assert entry["in_domain_accuracy"]["ci"] == list(wilson_interval(150, 200))
    assert entry["in_domain_accuracy"]["ci_kind"] == "wilson" and entry["wall_s"]["ci"] is None
    study = {"preset": "p", "model": "m", "max_steps": 1, "seeds": 1, "eval_n": 200, "in_domain": "a"}
    table = markdown({**study, "transfer": ["b"], "threshold": 0.9, "conditions": [entry]})
    assert "75.0% ± 6.0% [68.6%, 80.5%]" in table and "10 s (1 seed)" in table


def _numbers(run_dir):
    """metrics.jsonl without clocks and memory readings: what a run computed."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/", "memory/"))} for r in records]


def test_two_jobs_train_side_by_side_and_match_runs_on_the_same_threads(tmp_path):
    import os

    import torch

    two = run_study("tiny", seeds=1, steps=2, out=tmp_path / "two", n=2, overrides=FAST, progress=False, jobs=2)
    assert sorted(two["ran"]) == ["default-inject-seed0", "default-none-seed0"]
    assert [p["treated"] for p in two["study"]["pairs"]] == ["default-inject"]
    # Each worker gets half the CPU threads; the same runs in this process on as many threads match.
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, max(1, (os.cpu_count() or 1) // 2)))
    try:
        one = run_study("tiny", seeds=1, steps=2, out=tmp_path / "one", n=2, overrides=FAST, progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in one["ran"]:
        assert _numbers(tmp_path / "two" / "runs" / name) == _numbers(tmp_path / "one" / "runs" / name), name
    assert [c["in_domain_accuracy"] for c in two["study"]["conditions"]] == [
        c["in_domain_accuracy"] for c in one["study"]["conditions"]
    ]


def _two_process_preset(tmp_path, **two):
    spec = load_preset(find_preset("tiny"))
    spec["conditions"] = [{"name": "one"}, {"name": "two", "processes": 2, **two}]
    spec["pairs"] = [["two", "one"]]
    path = tmp_path / "two-processes.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_a_condition_trains_as_several_processes_with_the_same_global_batch(tmp_path):
    result = run_study(_two_process_preset(tmp_path), seeds=1, steps=2, out=tmp_path, n=2, overrides=FAST)
    assert sorted(result["ran"]) == ["one-seed0", "two-seed0"]
    for name, size in (("one-seed0", 1), ("two-seed0", 2)):
        records = [json.loads(line) for line in (tmp_path / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [0, 1, 2], name
        assert {r.get("world_size", 1) for r in records} == {size}, name
    assert [p["treated"] for p in result["study"]["pairs"]] == ["two"]
    again = run_study(_two_process_preset(tmp_path), seeds=1, steps=2, out=tmp_path, n=2, overrides=FAST)
    assert sorted(again["skipped"]) == ["one-seed0", "two-seed0"]
    # Resumed at another number of processes, the run would mix two batch splits: refused.
    shutil.rmtree(tmp_path / "runs" / "two-seed0" / "checkpoint-2")
    with pytest.raises(ValueError, match=r"two-seed0 was trained by 2 process\(es\), and its condition now asks for 1"):
        run_study(_two_process_preset(tmp_path, processes=1), seeds=1, steps=2, out=tmp_path, n=2, overrides=FAST)


def test_processes_that_do_not_divide_the_batch_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="condition two: processes must be a whole number >= 1 dividing"):
        plan(load_preset(_two_process_preset(tmp_path, processes=3)), tmp_path, seeds=1)


@pytest.mark.slow
def test_a_failing_multi_process_run_stops_the_study_with_its_name(tmp_path):
    # A hub-shaped name passes the study's checks and fails where each process loads it.
    preset = _two_process_preset(tmp_path, overrides={"model": "nobody/no-such-model-here"})
    with pytest.raises(RuntimeError, match=r"two-seed0: its 2 trainer processes stopped \(exit 1\); see above"):
        run_study(preset, seeds=1, steps=2, out=tmp_path, n=2, overrides=FAST, progress=False)
