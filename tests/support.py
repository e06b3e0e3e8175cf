"""What several test modules share: the repository's root, the tiny-run and lab-run overrides, lab
samples, tiny video files, a two-step training run, and the command line run in a child process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from vlm_grpo.data import Sample
from vlm_grpo.lab.scenes import render_scene

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
LAB_CONFIG = ROOT / "configs" / "lab.yaml"

# A seconds-long run of the tiny random Qwen2-VL (add output_dir, max_steps, ...).
TINY = [
    "model=tiny-qwen2-vl",
    "num_generations=4",
    "prompts_per_step=2",
    "max_completion_length=12",
    "learning_rate=1e-3",
    "progress=false",
]

# A run of the counting lab in a test, over LAB_CONFIG (lab-base on lab-clevr at the study's learning
# rate): no held-out evaluation, progress bar, metric sink or completion log, and no checkpoint before
# step 1000 (add output_dir, max_steps, model, ...; a later key=value wins).
LAB = ["data.eval=[]", "progress=false", "report_to=[]", "save_steps=1000", "log_completions_steps=0"]


def lab_config(*overrides: str):
    """The `TrainConfig` of a lab run in a test: LAB_CONFIG with LAB, then `overrides`."""
    from vlm_grpo.config import load_config

    return load_config(LAB_CONFIG, [*LAB, *overrides])


def child_env(**extra: str) -> dict:
    """The environment of a child process a test starts: this one's, offline, with one thread per
    process (two test workers share two cores) unless OMP_NUM_THREADS says otherwise, and `extra`."""
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads, **extra}


def run_python(*args: str, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python *args` (this interpreter) in a child process with `child_env()` unless `env` is given;
    its stdout and stderr captured as text."""
    command = [sys.executable, *args]
    env = child_env() if env is None else env
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def free_port() -> str:
    """A port for a launch's rendezvous: tests run in parallel, a fixed port would collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def torchrun(processes: int) -> list[str]:
    """The arguments to Python that launch `processes` processes of what follows them."""
    return ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", free_port()]


def run_cli(*args: str, env: dict | None = None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `vlm-grpo` command line (`python -m vlm_grpo.cli *args`) in a child process, as `run_python`."""
    return run_python("-m", "vlm_grpo.cli", *args, env=env, cwd=cwd, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    """The `vlm-grpo` command line started in a child process with `child_env()`, not waited for;
    its stdout and stderr are pipes of text."""
    command = [sys.executable, "-m", "vlm_grpo.cli", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def lab_samples(n=2, size=112):
    """`n` counting scenes, each question longer than the last (prompts of different lengths)."""
    out = []
    for i in range(n):
        image, scene = render_scene("lab-clevr", i, size=size)
        out.append(Sample(f"s{i}", image, scene.question + " Count carefully." * i, scene.count, "lab-clevr"))
    return out


def write_video(path: Path, frames: int = 8, fps: int = 4, size: tuple[int, int] = (64, 48)) -> Path:
    """A video file written by PyAV (MPEG-4 part 2, which every FFmpeg build encodes; VP8 for `.webm`, the
    codec WebM holds), its container from the suffix in any case: `frames` frames of (width, height) `size`
    at `fps`, frame i a uniform colour whose red channel is 20 * i, so a decoded frame tells which frame it was."""
    import av
    import numpy as np

    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libvpx" if path.suffix.lower() == ".webm" else "mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.zeros((height, width, 3), dtype=np.uint8)
            pixels[..., 0], pixels[..., 1], pixels[..., 2] = 20 * i, 100, 200 - 10 * i
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def train_two_steps(tmp_path, model_name: str, extra=()):
    """Two steps of the smoke config on `model_name`: both logged, every trainable parameter set
    touched, the final checkpoint written. Returns the trainer."""
    from vlm_grpo.config import load_config
    from vlm_grpo.training.trainer import Trainer

    overrides = [f"model={model_name}", f"output_dir={tmp_path / 'run'}", "max_steps=2", "save_steps=2"]
    trainer = Trainer(load_config(SMOKE, overrides + ["progress=false", "report_to=[]", *extra]))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2]
    assert changed and (tmp_path / "run" / "checkpoint-2").is_dir()
    return trainer


def logprobs_and_grads(model, prompts, ids, mask, group_size: int) -> tuple[dict, dict]:
    """Completion log-probs and parameter gradients of a fixed random weighting of them, by each sharing
    mode (none, prefix, vision): what the sharing tests compare."""
    from vlm_grpo.rollout import completion_logprobs

    rows = torch.arange(ids.size(0))
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    logps, grads = {}, {}
    for sharing in ("none", "prefix", "vision"):
        model.zero_grad()
        logps[sharing] = completion_logprobs(model, prompts, rows, ids, mask, group_size, 1.0, sharing)
        (logps[sharing] * weights * mask).sum().backward()
        grads[sharing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps, grads


def samples(source) -> list:
    """Every sample of a `Source`, in order."""
    return [source[i] for i in range(len(source))]


def one_line(exc_info) -> str:
    """The raised error's message, asserted to be one line."""
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message
