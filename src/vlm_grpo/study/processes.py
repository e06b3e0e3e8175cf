"""A study run trained as several trainer processes: launched with torchrun, stopped through it, and
recognised again when it resumes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ..config import TrainConfig, to_dict


def train_in_processes(cfg: TrainConfig, processes: int) -> tuple[int, bool]:
    """Train `cfg` as `processes` trainer processes (torchrun on this machine, gloo on a CPU), sharing
    this process's threads; the global batch is the one a single process takes (docs/scaling.md).
    Returns the launcher's exit code and whether a signal stopped it.

    The launcher runs in a session of its own, so a Ctrl-C (or a SIGTERM to the study) reaches the
    trainers once, through it: torchrun passes one SIGTERM on (save and stop) and ends the trainers
    itself after its 30 s grace. A second Ctrl-C stops waiting for them."""
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, torch.get_num_threads() // processes))}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(changed_settings(cfg), sort_keys=False))
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        child = subprocess.Popen([*launch, "-m", "vlm_grpo.cli", "train", str(config)], env=env, start_new_session=True)
        stopped = []

        def stop(signum=None, frame=None) -> None:
            stopped.append(signum)
            child.send_signal(signal.SIGTERM)

        with _on_sigterm(stop):
            try:
                code = child.wait()
            except KeyboardInterrupt:
                stop()
                code = child.wait()
    return code, bool(stopped)


def changed_settings(cfg: TrainConfig) -> dict:
    """The settings that differ from their defaults: what the launched interpreter reads. A section only a
    plug-in registered in this process knows is then left out unless the run sets it."""
    defaults = to_dict(TrainConfig())
    return {key: value for key, value in to_dict(cfg).items() if defaults.get(key, object()) != value}


@contextlib.contextmanager
def _on_sigterm(handler):
    """`handler` for SIGTERM while inside (where signals can be handled: the main thread), then the old one."""
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def processes_of(run_dir: Path) -> int:
    """How many trainer processes wrote a run's metrics (each line of a run of several says so)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 1
    with open(path) as lines:
        first = lines.readline()
    return json.loads(first).get("world_size", 1) if first.strip() else 1
