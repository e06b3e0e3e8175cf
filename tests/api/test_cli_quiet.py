"""The command line as a user meets it: no third-party noise at start-up, one line per user error
naming the value and the fix, an example in every --help, a study folder accepted by `report`, and
the W&B sink read back from an offline run."""

import json
import math
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import support
from support import ROOT, child_env, run_cli, run_python
from vlm_grpo.cli import app

SMOKE = str(support.SMOKE)
# What DeepSpeed, bitsandbytes and transformers printed at every start before: none of it concerns
# a run that uses neither ZeRO nor 4-bit weights, nor the load or save of a 3 MB model.
NOISE = ("Setting accelerator", "gemm_4bit", "Loading weights", "Writing model shards")


def _env(**extra: str) -> dict:
    """A child's environment (offline) with nothing that would quiet DeepSpeed on the code's behalf."""
    env = {k: v for k, v in child_env().items() if k != "DS_ACCELERATOR" and not k.startswith("WANDB_")}
    return {**env, **extra}


# ------------------------------------------------------------------ quiet start-up


@pytest.mark.slow
def test_models_and_a_tiny_run_print_no_third_party_noise(tmp_path):
    models = run_cli("models", env=_env(), cwd=ROOT, timeout=600)
    assert models.returncode == 0, models.stderr
    # lab-base is a saved folder, so it is loaded the way any real model is: transformers draws its
    # loading bar for it, and its writing bar for the checkpoint.
    args = [SMOKE, "model=lab-base", "max_steps=1", "progress=false", f"output_dir={tmp_path / 'run'}"]
    train = run_cli("train", *args, env=_env(), cwd=ROOT, timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    assert (tmp_path / "run" / "checkpoint-1").is_dir()  # the save happened: its bar had its chance
    for name, result in (("models", models), ("train", train)):
        both = result.stdout + result.stderr
        assert not [n for n in NOISE if n in both], f"{name} printed:\n{both}"
    assert train.stdout.strip().splitlines() == [f"done: 1 steps in {_wall(train.stdout)} s; outputs in {tmp_path}/run"]


def _wall(stdout: str) -> str:
    return stdout.split(" steps in ")[1].split(" s;")[0]


def test_importing_the_trainer_imports_neither_deepspeed_nor_bitsandbytes():
    code = "import sys, vlm_grpo.training.trainer; print(sorted({'deepspeed', 'bitsandbytes'} & set(sys.modules)))"
    result = run_python("-c", code, env=_env(), cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_the_learning_rate_schedule_is_transformers_own(name, warmup):
    """setup.lr_schedule stands in for transformers' get_scheduler (whose module imports peft and
    bitsandbytes): the same factor at every step, past the end too."""
    from transformers import get_scheduler

    from vlm_grpo.training.setup import lr_schedule

    def lrs(make) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        scheduler = make(optimizer)
        seen = []
        for _ in range(14):
            seen.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return seen

    ours = lrs(lambda opt: lr_schedule(name, opt, warmup, 12))
    theirs = lrs(lambda opt: get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=12))
    assert ours == pytest.approx(theirs, abs=1e-12)


# ------------------------------------------------------------------ one line per user error


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    "model, hint",
    [
        ("/path/that/does/not/exist", "; hub ids (org/name) need network"),
        # Shaped like a hub id but nowhere: offline, the hub's reason follows on the same line.
        ("nobody/no-such-model", ", and the hub did not serve it: We couldn't connect"),
    ],
)
def test_a_missing_model_is_one_line_that_names_it(model, hint, tmp_path):
    result = CliRunner().invoke(app, ["train", SMOKE, f"model={model}", f"output_dir={tmp_path}", "progress=false"])
    line = _one_line_error(result)
    assert line.startswith(f"error: unknown model '{model}': neither a local folder nor a registered name")
    assert "(vlm-grpo models lists them)" in line and hint in line


def test_an_unknown_key_suggests_the_closest_known_one():
    line = _one_line_error(CliRunner().invoke(app, ["train", SMOKE, "injection.moed=random"]))
    assert line == "error: unknown key 'injection.moed' (did you mean 'injection.mode'?)"
    line = _one_line_error(CliRunner().invoke(app, ["train", SMOKE, "learning_rat=0.1"]))
    assert line == "error: unknown key 'learning_rat' (did you mean 'learning_rate'?)"
    # Nothing close: the section's keys are the fix.
    line = _one_line_error(CliRunner().invoke(app, ["train", SMOKE, "injection.zzz=1"]))
    assert line == "error: unknown key 'injection.zzz'; known keys here: mode, payload, prefix_ratio, rate, rows"


# ------------------------------------------------------------------ help


def _commands(group, prefix: tuple = ()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_shows_an_example(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"Example: vlm-grpo {' '.join(command)}" in result.output


def test_train_help_shows_its_usage_with_the_brackets():
    assert len(COMMANDS) >= 8  # train, models, assess, eval, study, report, lab demo, lab pretrain
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "vlm-grpo train CONFIG.yaml [key=value ...]" in result.output


# ------------------------------------------------------------------ report on a study folder


def _study_folder(root: Path) -> Path:
    """What `vlm-grpo study` leaves: study.json and runs/<condition>-seed<k>/ with metrics.jsonl and
    config.yaml; one run not trained yet (no metrics)."""
    conditions = []
    for mode, mid in (("random", 10), ("none", 25)):
        for seed in (0, 1):
            run = root / "runs" / f"default-{mode}-seed{seed}"
            run.mkdir(parents=True)
            lines = []
            for step in range(1, 31):
                rate = 1 / (1 + math.exp(-(step - mid) / 3))
                lines.append(
                    json.dumps({"step": step, "rollout/answer_present_rate": rate, "rollout/accuracy": rate / 2})
                )
            (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
            (run / "config.yaml").write_text(f"seed: {seed}\nprompt:\n  style: default\ninjection:\n  mode: {mode}\n")
        stat = {"mean": 0.5, "ci": [0.4, 0.6], "values": [0.45, 0.55]}
        conditions.append(
            {
                "name": f"default-{mode}",
                "seeds": [0, 1],
                **dict.fromkeys(("in_domain_accuracy", "transfer_accuracy", "steps_to_threshold", "wall_s"), stat),
            }
        )
    (root / "runs" / "default-rescue-seed0").mkdir()
    study = {"preset": "synthetic", "in_domain": "lab-clevr", "transfer": ["lab-superclevr"], "max_steps": 30}
    (root / "study.json").write_text(json.dumps({**study, "conditions": conditions}))
    return root


def test_report_takes_a_study_folder(tmp_path):
    study = _study_folder(tmp_path / "study")
    result = CliRunner().invoke(app, ["report", str(study), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report" / "report.md").read_text()
    for name in ("default-random-seed0", "default-random-seed1", "default-none-seed0", "default-none-seed1"):
        assert f"| {name} (" in md, name
    assert "default-rescue" not in md  # not trained yet: no metrics to report
    assert "cross_domain.png" in md and "| default-none | 2 |" in md  # the study's own study.json
    assert "injection_vs_none.png" in md


def test_report_names_a_folder_that_is_neither_a_run_nor_a_study(tmp_path):
    line = _one_line_error(CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r")]))
    assert f"{tmp_path}: neither a run folder (with metrics.jsonl) nor a study folder" in line


# ------------------------------------------------------------------ W&B


@pytest.mark.slow
def test_wandb_offline_run_holds_the_config_and_every_metric(tmp_path):
    pytest.importorskip("wandb", minversion="0.31")  # `wandb leet inspect` reads the run back
    env = _env(
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_CONFIG_DIR=str(tmp_path / "config"),
        WANDB_CACHE_DIR=str(tmp_path / "cache"),
    )
    out = tmp_path / "run"
    args = [SMOKE, "max_steps=1", "progress=false", "report_to=[wandb]", f"output_dir={out}"]
    train = run_cli("train", *args, env=env, cwd=tmp_path, timeout=600)
    assert train.returncode == 0, train.stdout + train.stderr
    (log,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")  # WANDB_DIR decides where, as W&B documents
    inspect = run_python("-m", "wandb", "leet", "inspect", "--json", str(log), env=env, cwd=tmp_path, timeout=600)
    assert inspect.returncode == 0, inspect.stderr
    records = [json.loads(line) for line in inspect.stdout.splitlines() if line.startswith("{")]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    config = run["config"]["update"]
    assert run["project"] == "vlm-grpo" and run["display_name"] == "run"  # the output folder's name
    assert config["model"] == "tiny-qwen2-vl" and config["max_steps"] == 1 and config["report_to"] == ["wandb"]
    assert config["injection"]["mode"] == "none" and config["data"]["train"] == "lab-clevr"
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = {k for item in history for k in item if not k.startswith("_")}
    (metrics,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    numeric = {k for k, v in metrics.items() if k != "step" and isinstance(v, (int, float))}
    assert numeric and logged == numeric
    assert {item["_step"] for item in history} == {1}
