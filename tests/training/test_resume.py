"""Kill-and-resume: a run killed with SIGKILL at any point resumes to bit-identical parameters."""

import json
import shutil
import signal
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from support import run_python, start_cli

pytestmark = pytest.mark.slow

RUN = [
    "model=tiny-qwen2-vl",
    "num_generations=4",
    "prompts_per_step=2",
    "max_completion_length=10",
    "learning_rate=1e-3",
    "progress=false",
    "injection.mode=random",
    "num_iterations=2",
    "report_to=[]",
    "max_steps=4",
    "save_steps=2",
    "save_total_limit=2",
]

# Runs training in a child process and SIGKILLs it at a chosen point: during the k-th step's update,
# or while checkpoint k is being written (model saved, trainer state not yet).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from vlm_grpo.training import checkpoint, trainer
    from vlm_grpo.config import load_config
    where, at = sys.argv[1], int(sys.argv[2])
    if where == "checkpoint":
        real_save = checkpoint.torch.save
        def save(obj, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, *args, **kwargs)
        checkpoint.torch.save = save
    elif where == "update":
        real_update, calls = trainer.Trainer.update, []
        def update(self, *args):
            calls.append(1)
            if len(calls) == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_update(self, *args)
        trainer.Trainer.update = update
    trainer.Trainer(load_config(None, sys.argv[3:])).train()
""")


def run(args, tmp_path, where="none", at=0):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return run_python(str(driver), where, str(at), *args)


def final_weights(out):
    return load_file(out / "checkpoint-4" / "model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    result = run(RUN + [f"output_dir={tmp / 'run'}"], tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp / "run"


@pytest.mark.parametrize("where,at", [("update", 3), ("checkpoint", 4), ("checkpoint", 2)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, reference, where, at):
    out = tmp_path / "run"
    killed = run(RUN + [f"output_dir={out}"], tmp_path, where, at)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "checkpoint-4").exists()
    resumed = run(RUN + [f"output_dir={out}", "resume=true"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours, theirs = final_weights(out), final_weights(reference)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    def strip(line):
        return {k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "throughput/"))}

    assert [strip(x) for x in (out / "metrics.jsonl").read_text().splitlines()] == [
        strip(x) for x in (reference / "metrics.jsonl").read_text().splitlines()
    ]
    assert not list(out.glob(".checkpoint-*.tmp"))  # the half-written one was cleaned up


def test_save_total_limit_keeps_the_newest(reference):
    assert sorted(p.name for p in reference.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def test_half_written_checkpoint_is_never_picked(tmp_path, reference):
    from vlm_grpo.training import checkpoint

    shutil.copytree(reference / "checkpoint-2", tmp_path / "checkpoint-2")
    (tmp_path / ".checkpoint-4.tmp").mkdir()
    (tmp_path / "checkpoint-6").mkdir()  # no trainer_state.pt: incomplete
    assert checkpoint.latest(tmp_path).name == "checkpoint-2"


def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path):
    import time

    out = tmp_path / "run"
    args = [a for a in RUN if not a.startswith(("max_steps", "save_steps"))] + ["max_steps=500", "save_steps=1000"]
    process = start_cli("train", *args, f"output_dir={out}")
    deadline = time.time() + 240
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-2000:]
    saved = sorted(out.glob("checkpoint-*"))
    assert len(saved) == 1 and (saved[0] / "trainer_state.pt").is_file()
    assert "resume with resume=true" in stdout + stderr
