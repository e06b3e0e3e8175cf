"""A run's signal handlers are the caller's again when it ends, however it ends, and keep nothing alive."""

import gc
import signal
import weakref

import pytest

from vlm_grpo.config import load_config
from vlm_grpo.core import losses
from vlm_grpo.training.trainer import Trainer

TINY = ["model=tiny-qwen2-vl", "num_generations=2", "prompts_per_step=2", "max_completion_length=6",
        "num_iterations=1", "data.eval=[]", "report_to=[]", "progress=false", "log_completions_steps=0"]  # fmt: skip


def _handlers():
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


@pytest.fixture
def callers_handlers():
    """The test's own handlers, as a notebook or script would have them; put back afterwards."""
    seen = []

    def on_int(signum, frame):
        seen.append(signum)

    before = _handlers()
    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_int)
    yield seen
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])


def test_handlers_come_back_after_train_and_the_trainer_is_collectable(tmp_path, callers_handlers):
    ours = _handlers()
    trainer = Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=1"]))
    trainer.train()
    assert _handlers() == ours
    refs = [weakref.ref(trainer), weakref.ref(trainer.model), weakref.ref(trainer.optimizer)]
    del trainer
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_handlers_come_back_when_training_fails(tmp_path, monkeypatch, callers_handlers):
    ours = _handlers()
    monkeypatch.setattr(losses, "grpo_loss", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken loss")))
    trainer = Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=1"]))
    with pytest.raises(RuntimeError, match="broken loss"):
        trainer.train()
    assert _handlers() == ours


def test_one_signal_saves_and_stops_a_second_reaches_the_caller(tmp_path, monkeypatch, callers_handlers):
    trainer = Trainer(load_config(None, TINY + [f"output_dir={tmp_path}", "max_steps=5", "save_steps=100"]))
    real_save = trainer.save

    def save_during_a_second_ctrl_c(step):
        signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C again while the checkpoint is written
        return real_save(step)

    real_update = trainer.update

    def update_then_ctrl_c(batch):
        result = real_update(batch)
        signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(trainer, "update", update_then_ctrl_c)
    monkeypatch.setattr(trainer, "save", save_during_a_second_ctrl_c)
    trainer.train()
    assert callers_handlers == [signal.SIGINT]  # the second Ctrl-C went to the caller's handler
    assert (tmp_path / "checkpoint-1" / "trainer_state.pt").is_file()  # the first one saved at step 1


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="reads /proc (Linux)")
def test_five_runs_in_one_process_keep_memory_flat(tmp_path):
    """As a study runs them: what a finished run held is released before the next (a generous bound)."""
    sizes = []
    for i in range(5):
        extra = [f"output_dir={tmp_path / str(i)}", "max_steps=2", "save_steps=2", "report_to=[tensorboard]"]
        extra += ["data.eval=[lab-clevr]", "data.eval_size=4", "data.eval_steps=2", "log_completions_steps=1"]
        Trainer(load_config(None, TINY + extra)).train()  # later keys override earlier ones
        gc.collect()
        sizes.append(_resident_mb())
    assert max(sizes[1:]) - sizes[0] < 60, sizes
