"""Bad input gets a clear message naming the row; numerical faults and failed writes lose nothing."""

import json

import pytest
import torch
from PIL import Image

from support import run_cli
from vlm_grpo.config import load_config
from vlm_grpo.core import losses
from vlm_grpo.data import BadSample, Sample
from vlm_grpo.training import checkpoint
from vlm_grpo.training.trainer import Trainer

TINY = [
    "model=tiny-qwen2-vl",
    "num_generations=4",
    "prompts_per_step=2",
    "max_completion_length=8",
    "learning_rate=1e-3",
    "progress=false",
    "report_to=[]",
    "num_iterations=1",
    "injection.mode=random",
]


def write_rows(folder, rows):
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (56, 56), (90, 90, 90)).save(folder / "ok.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG broken")
    path = folder / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


GOOD = {"image": "ok.png", "question": "How many items are there in the image?", "answer": 3}
BAD_ROWS = {
    "missing image": ({"image": "nope.png", "question": "How many?", "answer": 3}, "nope.png does not exist"),
    "corrupt image": ({"image": "corrupt.png", "question": "How many?", "answer": 3}, "cannot be decoded"),
    "answer not an integer": ({"image": "ok.png", "question": "How many?", "answer": "3.5"}, "is not an integer"),
    "empty question": ({"image": "ok.png", "question": "  ", "answer": 3}, "the question is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_is_skipped_and_counted(tmp_path, case):
    row, message = BAD_ROWS[case]
    data = write_rows(tmp_path / "data", [GOOD, row, GOOD, GOOD])
    out = tmp_path / "run"
    result = run_cli("train", *TINY, f"output_dir={out}", "max_steps=2", f"data.train={data}", "data.eval_holdout=0")
    assert result.returncode == 0, result.stderr[-1500:]
    assert "train.jsonl#1" in result.stderr + result.stdout and message in result.stderr + result.stdout
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["data/skipped"] >= 1


@pytest.mark.parametrize("case", ["corrupt image", "empty question"])
def test_bad_row_stops_the_run_when_asked(tmp_path, case):
    row, message = BAD_ROWS[case]
    data = write_rows(tmp_path / "data", [row, row])
    args = [f"output_dir={tmp_path / 'run'}", "max_steps=1", f"data.train={data}", "data.eval_holdout=0"]
    result = run_cli("train", *TINY, *args, "data.on_bad_sample=error")
    assert result.returncode == 2 and message in result.stderr and "train.jsonl#" in result.stderr
    assert "Traceback" not in result.stderr


def test_zero_size_image():
    with pytest.raises(BadSample, match="s9: image has zero size"):
        Sample("s9", Image.new("RGB", (0, 0)), "q", 3, "d").load_images()


def test_data_set_with_no_usable_rows(tmp_path):
    bad = BAD_ROWS["missing image"][0]
    data = write_rows(tmp_path / "data", [bad, bad, bad])
    cfg = load_config(
        None, TINY + [f"output_dir={tmp_path / 'run'}", "max_steps=1", f"data.train={data}", "data.eval_holdout=0"]
    )
    with pytest.raises(ValueError, match="no usable rows"):
        Trainer(cfg).train()


def test_prompt_over_length_limit_is_never_truncated(tmp_path):
    data = write_rows(tmp_path / "data", [GOOD] * 3)
    cfg = load_config(
        None,
        TINY
        + [
            f"output_dir={tmp_path / 'run'}",
            "max_steps=1",
            f"data.train={data}",
            "data.eval_holdout=0",
            "max_prompt_length=10",
            "data.on_bad_sample=error",
        ],
    )
    with pytest.raises(BadSample, match=r"train.jsonl#\d: the prompt is \d+ tokens .* never truncated"):
        Trainer(cfg).train()


def test_nonfinite_loss_skips_the_update_and_is_counted(tmp_path, monkeypatch):
    real = losses.grpo_loss
    monkeypatch.setattr(losses, "grpo_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    trainer = Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=2", "save_steps=1"]))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["optim/skipped_steps"] == 2


def test_nonfinite_in_a_row_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = losses.grpo_loss
    monkeypatch.setattr(losses, "grpo_loss", lambda *a, **k: real(*a, **k) * float("inf"))
    trainer = Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=8", "save_steps=1"]))
    with pytest.raises(FloatingPointError, match="5 updates in a row .* last good checkpoint"):
        trainer.train()
    assert checkpoint.latest(tmp_path).name == "checkpoint-4"


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=2", "save_steps=1"]))
    real_save = checkpoint.torch.save

    def disk_full(obj, *args, **kwargs):
        if obj.get("step") == 2:
            raise OSError(28, "No space left on device")
        return real_save(obj, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(RuntimeError, match="could not write checkpoint .*checkpoint-2.*No space left.*intact"):
        trainer.train()
    assert checkpoint.latest(tmp_path).name == "checkpoint-1"
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_trainer_state_loads_with_weights_only(tmp_path):
    Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=1"])).train()
    state = torch.load(tmp_path / "checkpoint-1" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 1
