#!/usr/bin/env python
"""Whole-step throughput of our GRPO trainer against TRL's GRPOTrainer, and the log-prob pass alone.

What runs (all on one tiny local model, Qwen2-VL unless ``--family`` names another, the same saved
weights for both frameworks):

* three image sizes: 16, 64 and 256 image tokens per prompt (112, 224 and 448 px squares for
  Qwen2-VL's 28 px per merged token; 128, 256 and 512 px for Qwen3-VL's 32 px);
* one GRPO step = 4 prompts x G = 8 completions of exactly 32 new tokens (end-of-turn tokens are
  made impossible: TRL gets ``generation_kwargs={"min_new_tokens": 32}``, which its transformers
  generate honours; our sampler gets the EOS ids added to the ids it masks, see
  ``forbid_end_tokens``), temperature 1.0, beta 0 (no reference model), fp32, one process, one
  forward/backward over all 32 rows (TRL ``per_device_train_batch_size=32``, ours
  ``micro_batch_size=32``), the project's counting reward on both sides;
* ours with the project's defaults otherwise (``logprob_sharing=prefix``, ``generation_sharing=auto``),
  at ``num_iterations=1`` (matched with TRL) and, for information, at the seed's 4;
* every measurement runs in its own child process (so that peak RSS, ``ru_maxrss`` at the end of
  the child, belongs to one framework), the parent alternates children A B A B, and each child
  runs its warm-up steps before the timed ones;
* ``logprob_speedup``: one forward+backward log-prob pass with gradients over a full rollout batch
  of 32 rows, ``logprob_sharing=prefix`` against ``none`` (the per-row pass other frameworks use),
  median of alternating repeats, in a child of its own;
* ``--ablations``: ours again with ``generation_sharing=none``, ``logprob_sharing=none`` and both;
* interference: for each child, the CPU time other processes used meanwhile (``/proc/stat`` busy
  time minus the child's own); a full run waits for a quiet machine before each child and measures
  a disturbed child again (``--max-interference``, ``--retries``, ``--max-wait``).

The last line printed is one JSON object:
``{"ratio_vs_trl": {"16": r, "64": r, "256": r}, "logprob_speedup": {...}, "peak_rss_mb": {"ours": m, "trl": m}}``
with ratio = our completions per second / TRL's (> 1: ours is faster).

    # full run (3 repeats x (2 warm-up + 8 timed steps)), writes benchmarks/RESULTS.md
    python benchmarks/step_throughput.py
    python benchmarks/step_throughput.py --quick    # one repeat per size, a few minutes, writes nothing
    python benchmarks/step_throughput.py --family qwen3-vl --sizes 64   # the Qwen3-VL row
    python benchmarks/step_throughput.py --engine vllm   # adds ours sampling through vLLM (make vllm-env)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

IMAGE_TOKENS = (16, 64, 256)  # image tokens per prompt (square images)
TOKEN_SIDE_PX = {"qwen2-vl": 28, "qwen2.5-vl": 28, "qwen3-vl": 32}  # patch size x merge size
MODEL_TYPES = {"qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl"}
G = 8
PROMPTS_PER_STEP = 4
NEW_TOKENS = 32
# The phases our trainer times itself (`time/<phase>_s` in its metrics, `training.metrics.PhaseClock`);
# "other" in the tables is the rest of the step.
OUR_PHASES = ("data", "encode", "sampling", "scoring", "remedies", "rollout_logprobs", "update", "weight_sync")
DATA_ROWS = 16  # distinct rendered scenes per size; both frameworks draw from the same 16
SEED = 0
END = "<!-- END GENERATED -->"


def begin_marker(family: str, engine: str = "hf", new_tokens: int = NEW_TOKENS) -> str:
    """Where a family's (engine's, completion length's) generated block starts in RESULTS.md (Qwen2-VL's
    with the hf engine at 32 new tokens keeps its original name)."""
    tail = ("" if family == "qwen2-vl" else f" --family {family}") + ("" if engine == "hf" else f" --engine {engine}")
    tail += "" if new_tokens == NEW_TOKENS else f" --new-tokens {new_tokens}"
    return f"<!-- BEGIN GENERATED: benchmarks/step_throughput.py{tail} -->"


HERE = Path(__file__).resolve().parent
# label -> (child kind, num_iterations, our config overrides, table name). Ours and TRL alternate (A B);
# ours4 is informational; the ablations (--ablations) switch one of our sharing paths off at a time.
VARIANTS = {
    "ours": ("ours", 1, (), "ours, num_iterations=1"),
    "trl": ("trl", 1, (), "TRL, num_iterations=1"),
    "ours4": ("ours", 4, (), "ours, num_iterations=4 (seed default; not matched)"),
    "ours_gen_none": ("ours", 1, ("generation_sharing=none",), "ablation: ours, generation_sharing=none"),
    "ours_lp_none": ("ours", 1, ("logprob_sharing=none",), "ablation: ours, logprob_sharing=none"),
    "ours_both_none": (
        "ours",
        1,
        ("generation_sharing=none", "logprob_sharing=none"),
        "ablation: ours, both sharing paths off",
    ),
}
ABLATIONS = ("ours_gen_none", "ours_lp_none", "ours_both_none")
VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
# `--engine vllm`: ours sampling through a vLLM server (its own process, weights pushed after every
# optimizer step), without and with the one-step-ahead overlap. The end tokens are made impossible
# there too: the engine takes the same adapter's forbidden ids (as a -100 logit bias).
VLLM_VARIANTS = {
    "ours_vllm": ("ours", 1, ("rollout_engine=vllm", f"vllm.python={VLLM_PYTHON}"), "ours, rollout_engine=vllm"),
    "ours_vllm_overlap": (
        "ours",
        1,
        ("rollout_engine=vllm", f"vllm.python={VLLM_PYTHON}", "overlap_rollout=true"),
        "ours, rollout_engine=vllm, overlap_rollout=true",
    ),
}
VARIANTS.update(VLLM_VARIANTS)


# ------------------------------------------------------------------------------------------ setup
def image_side(tokens: int, family: str) -> int:
    """Side in pixels of the square image that gives `tokens` image tokens to `family`."""
    return int(round(tokens**0.5)) * TOKEN_SIDE_PX[family]


def folders(workdir: Path, family: str, tokens: int) -> tuple[Path, Path]:
    """(model folder, data folder) of one family and image size."""
    return workdir / f"model_{family}_{tokens}", workdir / f"data_{family}_{tokens}"


def prepare(workdir: Path, sizes: list[int], model_size: str, family: str = "qwen2-vl") -> None:
    """One saved tiny model folder and one jsonl data set per image size (same seed: same weights)."""
    from transformers import GenerationConfig

    from vlm_grpo.lab.scenes import render_scene
    from vlm_grpo.models.tiny import save_tiny

    for tokens in sizes:
        px = image_side(tokens, family)
        model_dir, data_dir = folders(workdir, family, tokens)
        if not (model_dir / "config.json").is_file():
            save_tiny(model_dir, family=family, size=model_size, seed=SEED, image_pixels=px * px)
            # End-of-turn tokens impossible before 32 new tokens (longer runs set their own length:
            # TRL through generation_kwargs, ours through the masked end tokens).
            generation = GenerationConfig.from_pretrained(model_dir)
            generation.min_new_tokens = NEW_TOKENS
            generation.save_pretrained(model_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "train.jsonl").is_file():
            lines = []
            for seed in range(DATA_ROWS):
                image, scene = render_scene("lab-clevr", seed, size=px)
                image.save(data_dir / f"{seed}.png")
                lines.append(json.dumps({"image": f"{seed}.png", "question": scene.question, "answer": scene.count}))
            (data_dir / "train.jsonl").write_text("\n".join(lines) + "\n")


def rows_per_step(a: argparse.Namespace) -> int:
    """Completions per step: G x prompts per step."""
    return a.group_size * PROMPTS_PER_STEP


def read_rows(data_file: Path) -> list[dict]:
    return [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()]


def timed(phases: dict[str, list[float]], name: str, fn):
    """`fn`, recording the seconds of every call under `phases[name]`."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name].append(time.perf_counter() - t0)

    return wrapper


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def forbid_end_tokens() -> bool:
    """Make end-of-turn tokens impossible in our sampler, as ``min_new_tokens=32`` does in TRL's.

    Our rollout masks the ids the family adapter's ``vision_token_ids(model)`` returns (to -inf) in every
    sampling step (its own prefix-sharing sampler and transformers' generate alike) and in the
    log-prob passes; adding the model's EOS ids there makes every completion exactly 32 tokens.
    Benchmark-only, in this process; the project's files are untouched. Returns False (and the
    report shows the real mean lengths) if the hook is gone.
    """
    from vlm_grpo.models.families import FamilyAdapter

    original = getattr(FamilyAdapter, "vision_token_ids", None)
    if original is None:
        print("warning: FamilyAdapter.vision_token_ids is gone; completions may end early", file=sys.stderr)
        return False

    def forbidden(self, model) -> list[int]:
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return sorted(set(original(self, model)) | set(eos))

    FamilyAdapter.vision_token_ids = forbidden
    return True


# ------------------------------------------------------------------------------------------ children
def child_ours(a: argparse.Namespace) -> dict:
    set_threads(a.threads)
    forced = forbid_end_tokens()
    import torch

    from vlm_grpo.config import load_config
    from vlm_grpo.training.inputs import RunInputs
    from vlm_grpo.training.trainer import Trainer

    work = Path(a.workdir)
    out = work / "runs" / f"ours_{a.size}_k{a.iterations}_{os.getpid()}"
    model_dir, data_dir = folders(work, a.family, a.size)
    cfg = load_config(
        None,
        [
            f"model={model_dir}",
            f"output_dir={out}",
            f"data.train={data_dir / 'train.jsonl'}",
            "data.eval_holdout=0",
            f"num_generations={a.group_size}",
            f"prompts_per_step={PROMPTS_PER_STEP}",
            f"num_iterations={a.iterations}",
            f"max_completion_length={a.new_tokens}",
            f"micro_batch_size={a.micro_batch}",
            "temperature=1.0",
            "beta=0.0",
            "precision=fp32",
            "device=cpu",
            "report_to=[]",
            "progress=false",
            f"max_steps={a.warmup + a.steps}",
            "save_steps=1000000",
            "log_completions_steps=0",
            f"seed={SEED}",
            "learning_rate=1e-5",
            *a.override,
        ],
    )
    server_mb = {"peak": 0.0}

    def read_server_peak(step: int, metrics: dict) -> None:  # a vLLM server's peak memory, read while it runs
        process = getattr(trainer.rollouts.engine, "process", None)
        if process is not None:
            server_mb["peak"] = max(server_mb["peak"], process_peak_mb(process.pid))

    trainer = Trainer(cfg, RunInputs(callbacks=[read_server_peak]))
    trainer.save = lambda step: None  # no checkpoint at the end (TRL saves none): not timed, but its memory would count
    setup_rss = rss_mb()
    trainer.train()  # its own metrics time each phase of each step (time/<phase>_s)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed_records = records[a.warmup :]
    phases = {name: [r.get(f"time/{name}_s", 0.0) for r in records] for name in OUR_PHASES}
    return {
        "framework": "ours",
        "size": a.size,
        "iterations": a.iterations,
        "forced_length": forced,
        "overrides": a.override,
        "logprob_sharing": cfg.logprob_sharing,
        "generation_sharing": getattr(cfg, "generation_sharing", "n/a"),
        "step_s": [r["time/step_s"] for r in timed_records],
        "warmup_s": [r["time/step_s"] for r in records[: a.warmup]],
        "mean_completion_length": statistics.fmean(r["completion/mean_length"] for r in timed_records),
        "completions_per_step": rows_per_step(a),
        "phases_s": {k: v[a.warmup :] for k, v in phases.items()},
        "setup_rss_mb": setup_rss,
        "peak_rss_mb": rss_mb() + server_mb["peak"],  # with vllm: trainer and server together
        "engine_peak_rss_mb": server_mb["peak"],
        "threads": torch.get_num_threads(),
    }


def process_peak_mb(pid: int) -> float:
    """Peak resident memory of another process (VmHWM), in MB; 0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def child_trl(a: argparse.Namespace) -> dict:
    set_threads(a.threads)
    import datasets
    import torch
    import trl
    from PIL import Image
    from transformers import AutoModelForImageTextToText, TrainerCallback

    from vlm_grpo.models.families import adapter_for_type
    from vlm_grpo.tasks.rewards import resolve
    from vlm_grpo.tasks.styles import DEFAULT

    work = Path(a.workdir)
    model_dir, data_dir = folders(work, a.family, a.size)
    data_file = data_dir / "train.jsonl"
    rows = read_rows(data_file)
    # The same messages our DEFAULT prompt style builds: the image, then the bare question.
    dataset = datasets.Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}]
                for r in rows
            ],
            "image": [Image.open(data_file.parent / r["image"]).convert("RGB") for r in rows],
            "answer": [int(r["answer"]) for r in rows],
        }
    )

    def counting(completions, answer, **kwargs):
        """The project's counting reward (+1 correct, 0 wrong number, -1 no number) per completion."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        reward = resolve("answer")  # the study's ternary reward of the counting task
        return [reward(t, int(n), DEFAULT) for t, n in zip(texts, answer)]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.step_s, self.interval_s, self.last_end, self.logs = 0.0, [], [], None, []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.step_s.append(now - self.begin)
            self.interval_s.append(now - self.last_end if self.last_end is not None else float("nan"))
            self.last_end = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    args = trl.GRPOConfig(
        output_dir=str(work / "runs" / f"trl_{a.size}_{os.getpid()}"),
        seed=SEED,
        per_device_train_batch_size=a.micro_batch,
        gradient_accumulation_steps=rows_per_step(a) // a.micro_batch,
        num_generations=a.group_size,
        max_completion_length=a.new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        loss_type="bnpo",
        scale_rewards="group",
        epsilon=0.2,
        learning_rate=1e-5,
        weight_decay=0.01,
        max_grad_norm=1.0,
        lr_scheduler_type="linear",
        generation_kwargs={"min_new_tokens": a.new_tokens},
        max_steps=a.warmup + a.steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        dataloader_num_workers=0,
        log_completions=False,
    )
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype=torch.float32)
    timer = StepTimer()
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=counting,
        args=args,
        train_dataset=dataset,
        processing_class=adapter_for_type(MODEL_TYPES[a.family]).load_processor(str(model_dir), MODEL_TYPES[a.family]),
        callbacks=[timer],
    )
    setup_rss = rss_mb()
    phases: dict[str, list[float]] = {"generate": [], "rewards": [], "generate_and_score": []}

    trainer._generate_single_turn = timed(phases, "generate", trainer._generate_single_turn)
    trainer._calculate_rewards = timed(phases, "rewards", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed(
        phases, "generate_and_score", trainer._generate_and_score_completions
    )
    trainer.train()
    lengths = [float(log["completions/mean_length"]) for log in timer.logs[a.warmup :]]
    return {
        "framework": "trl",
        "size": a.size,
        "iterations": 1,
        "step_s": timer.step_s[a.warmup :],
        "warmup_s": timer.step_s[: a.warmup],
        "interval_s": timer.interval_s[a.warmup :],
        "mean_completion_length": statistics.fmean(lengths) if lengths else float("nan"),
        "completions_per_step": rows_per_step(a),
        "phases_s": {k: v[a.warmup :] for k, v in phases.items()},
        "setup_rss_mb": setup_rss,
        "peak_rss_mb": rss_mb(),
        "threads": torch.get_num_threads(),
    }


def logprob_bench(
    model_dir: Path, data_file: Path, repeats: int, warmup: int = 1, group: int = G, new_tokens: int = NEW_TOKENS
) -> dict:
    """Forward+backward of one log-prob pass with gradients over 32 rows: prefix against none."""
    import torch

    from vlm_grpo.data import Sample
    from vlm_grpo.models import load_model_and_processor
    from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
    from vlm_grpo.tasks.styles import DEFAULT

    model, processor = load_model_and_processor(str(model_dir), torch.device("cpu"), torch.float32)
    rows = read_rows(data_file)[:PROMPTS_PER_STEP]
    samples = [
        Sample(str(i), str(data_file.parent / r["image"]), r["question"], int(r["answer"]), "bench")
        for i, r in enumerate(rows)
    ]
    prompts = encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))
    torch.manual_seed(SEED)
    ids, mask, _, _ = generate(model, processor, prompts, group, new_tokens, temperature=1.0)
    model.train()
    index = torch.arange(ids.size(0))
    times: dict[str, list[float]] = {"prefix": [], "none": []}
    for i in range(warmup + repeats):
        for sharing in ("prefix", "none") if i % 2 == 0 else ("none", "prefix"):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            logp = completion_logprobs(model, prompts, index, ids, mask, group, 1.0, sharing)
            ((logp * mask).sum() / mask.sum()).backward()
            elapsed = time.perf_counter() - t0
            if i >= warmup:
                times[sharing].append(elapsed)
    prefix, none = statistics.median(times["prefix"]), statistics.median(times["none"])
    return {
        "rows": int(ids.size(0)),
        "completion_tokens": int(ids.size(1)),
        "prompt_tokens": int(prompts.inputs["input_ids"].size(1)),
        "prefix_s": prefix,
        "none_s": none,
        "speedup": none / prefix,
        "times_s": times,
    }


def child_logprob(a: argparse.Namespace) -> dict:
    set_threads(a.threads)
    forbid_end_tokens()
    import torch

    work = Path(a.workdir)
    model_dir, data_dir = folders(work, a.family, a.size)
    result = logprob_bench(model_dir, data_dir / "train.jsonl", a.logprob_repeats, 1, a.group_size, a.new_tokens)
    return {
        "framework": "logprob",
        "size": a.size,
        **result,
        "peak_rss_mb": rss_mb(),
        "threads": torch.get_num_threads(),
    }


CHILDREN = {"ours": child_ours, "trl": child_trl, "logprob": child_logprob}


# ------------------------------------------------------------------------------------------ parent
def cpu_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, steal included), from /proc/stat."""
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return float("nan")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def other_cores(seconds: float = 2.0) -> float:
    """Cores other processes keep busy right now (this parent sleeps meanwhile)."""
    before = cpu_busy_s()
    time.sleep(seconds)
    return (cpu_busy_s() - before) / seconds


def wait_for_quiet(max_wait_s: float, threshold: float, log) -> float:
    """Wait until other processes use at most `threshold` cores, for at most `max_wait_s` seconds."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        busy = other_cores()
        if not busy > threshold:
            break
        log(f"other processes use {busy:.2f} cores: waiting for a quiet machine")
        time.sleep(13)
    return time.perf_counter() - start


def run_child(
    kind: str,
    a: argparse.Namespace,
    size: int,
    iterations: int = 1,
    log_dir: Path | None = None,
    overrides: tuple[str, ...] = (),
) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--size",
        str(size),
        "--iterations",
        str(iterations),
        "--workdir",
        str(a.workdir),
        "--family",
        a.family,
        "--threads",
        str(a.threads),
        "--warmup",
        str(a.warmup),
        "--steps",
        str(a.steps),
        "--micro-batch",
        str(a.micro_batch),
        "--group-size",
        str(a.group_size),
        "--new-tokens",
        str(a.new_tokens),
        "--logprob-repeats",
        str(a.logprob_repeats),
        *(f"--override={o}" for o in overrides),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(a.threads),
        "MKL_NUM_THREADS": str(a.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TQDM_DISABLE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    t0, busy0, cpu0 = time.perf_counter(), cpu_busy_s(), children_cpu_s()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    # Cores that other processes used while the child ran: the machine's busy time minus the child's own.
    interference = max(0.0, (cpu_busy_s() - busy0 - (children_cpu_s() - cpu0)) / wall)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        tag = "_".join(o.split("=")[0] if "/" in o else o.replace("=", "-") for o in overrides)  # no paths in names
        (log_dir / f"{kind}_{size}_k{iterations}{'_' + tag if tag else ''}_{int(time.time() * 1000)}.log").write_text(
            proc.stdout + proc.stderr
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} size={size} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    result["child_wall_s"] = wall
    result["other_cores"] = interference
    result["load_1m_after"] = os.getloadavg()[0]
    return result


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict]) -> dict:
    """Pool the timed steps of all repeats of one framework at one size."""
    steps = [s for r in runs for s in r["step_s"]]
    med = median(steps)
    out = {
        "median_step_s": med,
        "completions_per_s": runs[0]["completions_per_step"] / med,
        "steps": len(steps),
        "repeats": len(runs),
        "min_step_s": min(steps),
        "max_step_s": max(steps),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "setup_rss_mb": max(r["setup_rss_mb"] for r in runs),
        "mean_completion_length": statistics.fmean(r["mean_completion_length"] for r in runs),
        "repeat_medians_s": [median(r["step_s"]) for r in runs],
        "phases_median_s": {k: median([v for r in runs for v in r["phases_s"][k]]) for k in runs[0]["phases_s"]},
        "threads": runs[0]["threads"],
        "runs": runs,
    }
    if "interval_s" in runs[0]:
        out["median_interval_s"] = median([s for r in runs for s in r["interval_s"]])
    return out


def machine() -> dict:
    import torch
    import transformers
    import trl

    cpu, fields = "unknown", {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        cpu = fields.get("model name", cpu)
        if "cpu family" in fields and "model" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields['model']}"
            cpu += ", virtual machine)" if "hypervisor" in fields.get("flags", "").split() else ")"
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> dict | None:
    """Runs the benchmark (or, with --child, one measurement); returns the report (None for a child)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="one repeat per size, 1 warm-up + 2 timed steps (a few minutes)"
    )
    p.add_argument("--sizes", default="16,64,256", help="image tokens per prompt, comma separated (16, 64, 256)")
    p.add_argument("--repeats", type=int, default=3, help="A B alternations per size (child processes per framework)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of every child")
    p.add_argument("--steps", type=int, default=8, help="timed steps per child")
    p.add_argument("--logprob-repeats", type=int, default=7, help="timed repeats of each log-prob path")
    p.add_argument(
        "--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads, the same for every child"
    )
    p.add_argument(
        "--micro-batch", type=int, default=None, help="rows per forward/backward, both frameworks (default: all)"
    )
    p.add_argument("--group-size", type=int, default=G, help="completions per prompt, G (8)")
    p.add_argument(
        "--new-tokens", type=int, default=NEW_TOKENS, help="new tokens per completion, all of them sampled (32)"
    )
    p.add_argument("--model-size", default="small", choices=("nano", "small"), help="vlm_grpo.tiny size")
    p.add_argument("--family", default="qwen2-vl", choices=tuple(TOKEN_SIDE_PX), help="tiny model family")
    p.add_argument("--no-ours4", action="store_true", help="skip the informational run of ours at num_iterations=4")
    p.add_argument("--no-logprob", action="store_true", help="skip the log-prob pass measurement")
    p.add_argument(
        "--engine",
        choices=("hf", "vllm"),
        default="hf",
        help="vllm: also run ours with rollout_engine=vllm, without and with overlap_rollout (needs make vllm-env)",
    )
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also run ours with generation_sharing=none, logprob_sharing=none, and both (attribution)",
    )
    p.add_argument(
        "--max-interference",
        type=float,
        default=0.15,
        help="cores other processes may use during a child before it is measured again",
    )
    p.add_argument(
        "--retries", type=int, default=None, help="re-measurements of a disturbed child (default 3; --quick 0)"
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="seconds to wait for a quiet machine before each child (default 900; --quick 0)",
    )
    p.add_argument("--workdir", default=None, help="models, data and logs (default: a fresh temporary folder)")
    p.add_argument(
        "--results",
        default=None,
        help="markdown file to write (default: benchmarks/RESULTS.md for a full run, nothing with --quick); "
        "'none' disables",
    )
    # Internal: one measurement in this process.
    p.add_argument("--child", choices=tuple(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--iterations", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--override", action="append", default=[], help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.child:
        a.micro_batch = a.micro_batch or rows_per_step(a)
        result = CHILDREN[a.child](a)
        print(json.dumps(result), flush=True)
        return None

    if a.quick:
        a.repeats, a.warmup, a.steps, a.logprob_repeats = 1, 1, 2, 2
    if a.retries is None:
        a.retries = 0 if a.quick else 3
    if a.max_wait is None:
        a.max_wait = 0.0 if a.quick else 900.0
    if a.group_size < 2 or a.new_tokens < 1:
        p.error("--group-size must be at least 2 (TRL needs two completions per prompt), --new-tokens at least 1")
    a.micro_batch = a.micro_batch or rows_per_step(a)
    if rows_per_step(a) % a.micro_batch:
        p.error(f"--micro-batch must divide {rows_per_step(a)}")
    sizes = [int(s) for s in a.sizes.split(",")]
    for s in sizes:
        if s not in IMAGE_TOKENS:
            p.error(f"size {s} is not one of {sorted(IMAGE_TOKENS)}")
    results_path = a.results if a.results is not None else (None if a.quick else str(HERE / "RESULTS.md"))
    if results_path in ("none", ""):
        results_path = None
    a.workdir = str(Path(a.workdir or tempfile.mkdtemp(prefix="vlm_grpo_bench_")).resolve())
    work = Path(a.workdir)
    command = "python " + " ".join(
        shlex.quote(x) for x in [os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else argv)
    )

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    rerun = {"count": 0}

    def measure(kind: str, size: int, iterations: int, overrides: tuple[str, ...]) -> dict:
        """One child; measured again (after waiting for quiet) while other processes disturbed it."""
        for attempt in range(a.retries + 1):
            if a.max_wait > 0:
                wait_for_quiet(a.max_wait, a.max_interference, log)
            result = run_child(kind, a, size, iterations, work / "logs", overrides)
            if result["other_cores"] <= a.max_interference:
                break
            if attempt < a.retries:
                rerun["count"] += 1
                log(
                    f"other processes used {result['other_cores']:.2f} cores during {kind} size {size}: measuring again"
                )
        result["attempts"] = attempt + 1
        return result

    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    log(f"workdir {work}; preparing models and data for sizes {sizes}")
    prepare(work, sizes, a.model_size, a.family)
    per_size: dict[int, dict] = {}
    for size in sizes:
        # A B (A B ...): ours and TRL alternate, then ours at the seed's num_iterations=4 (and ablations).
        order = ["ours", "trl"] + ([] if a.no_ours4 else ["ours4"]) + (list(ABLATIONS) if a.ablations else [])
        order += list(VLLM_VARIANTS) if a.engine == "vllm" else []
        runs: dict[str, list[dict]] = {label: [] for label in order}
        for r in range(a.repeats):
            for label in order:
                kind, iterations, overrides, _ = VARIANTS[label]
                result = measure(kind, size, iterations, overrides)
                runs[label].append(result)
                log(
                    f"size {size} repeat {r + 1}/{a.repeats} {label}: median step {median(result['step_s']):.3f} s, "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB, mean length {result['mean_completion_length']:.1f}"
                )
        entry = {label: summarize(results) for label, results in runs.items()}
        if not a.no_logprob:
            lp = entry["logprob"] = measure("logprob", size, 1, ())
            log(
                f"size {size} log-prob pass: prefix {lp['prefix_s']:.3f} s, none {lp['none_s']:.3f} s, "
                f"speedup {lp['speedup']:.2f}x"
            )
        entry["ratio_vs_trl"] = entry["ours"]["completions_per_s"] / entry["trl"]["completions_per_s"]
        per_size[size] = entry

    final = {
        "ratio_vs_trl": {str(s): round(per_size[s]["ratio_vs_trl"], 3) for s in sizes},
        "logprob_speedup": {
            str(s): round(per_size[s]["logprob"]["speedup"], 3) for s in sizes if "logprob" in per_size[s]
        },
        "peak_rss_mb": {
            "ours": round(max(e[k]["peak_rss_mb"] for e in per_size.values() for k in ("ours", "ours4") if k in e), 1),
            "trl": round(max(e["trl"]["peak_rss_mb"] for e in per_size.values()), 1),
        },
    }
    kept = [r for e in per_size.values() for k in VARIANTS if k in e for r in e[k]["runs"]] + [
        e["logprob"] for e in per_size.values() if "logprob" in e
    ]
    loads = [r["load_1m_after"] for r in kept]
    interference = {
        "max_other_cores": max(r["other_cores"] for r in kept),
        "median_other_cores": median([r["other_cores"] for r in kept]),
        "children_over_threshold": sum(r["other_cores"] > a.max_interference for r in kept),
        "children": len(kept),
        "remeasured": rerun["count"],
        "threshold": a.max_interference,
    }
    report = {
        "command": command,
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "max_load_1m_after_child": max(loads),
        "interference": interference,
        "wall_s": (datetime.now(timezone.utc) - started).total_seconds(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "machine": machine(),
        "settings": {
            "threads": a.threads,
            "repeats": a.repeats,
            "warmup": a.warmup,
            "steps": a.steps,
            "logprob_repeats": a.logprob_repeats,
            "micro_batch": a.micro_batch,
            "group_size": a.group_size,
            "new_tokens": a.new_tokens,
            "model_size": a.model_size,
            "family": a.family,
            "ablations": a.ablations,
            "engine": a.engine,
            "retries": a.retries,
            "max_wait": a.max_wait,
            "max_interference": a.max_interference,
        },
        "sizes": {str(s): e for s, e in per_size.items()},
        "summary": final,
    }
    (work / "report.json").write_text(json.dumps(report, indent=2))
    if interference["children_over_threshold"]:
        log(
            f"warning: other processes used up to {interference['max_other_cores']:.2f} cores during "
            f"{interference['children_over_threshold']} measurement(s): those timings are not trustworthy "
            "(a full run waits for a quiet machine and measures disturbed children again)"
        )
    print(render_tables(report))
    if results_path:
        write_results(Path(results_path), report)
        log(f"wrote {results_path} (raw numbers: {work / 'report.json'})")
    print(json.dumps(final), flush=True)
    return report


# ------------------------------------------------------------------------------------------ report
def render_tables(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    g, length = s.get("group_size", G), s.get("new_tokens", NEW_TOKENS)
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM; Python {m['python']}, torch {m['torch']}, "
        f"transformers {m['transformers']}, trl {m['trl']}; {m['platform']}.",
        f"Run: {report['started_utc']}, {report['wall_s'] / 60:.1f} min; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in report['load_before'])}, "
        f"after {'/'.join(f'{x:.2f}' for x in report['load_after'])}; highest 1-min load after a child "
        f"{report['max_load_1m_after_child']:.2f} (a child itself loads up to {s['threads']}).",
    ]
    if "interference" in report:
        i = report["interference"]
        lines.append(
            f"Other processes during the kept measurements (machine busy time minus the child's own CPU time): "
            f"median {i['median_other_cores']:.2f}, at most {i['max_other_cores']:.2f} cores of {m['cores']}; "
            f"{i['children_over_threshold']} of {i['children']} kept children above the {i['threshold']:.2f}-core "
            f"threshold; {i['remeasured']} child run(s) were disturbed and measured again."
        )
    lines += [
        f"Settings: torch.set_num_threads({s['threads']}) in every child; tiny {s.get('family', 'qwen2-vl')} "
        f"`{s['model_size']}`; "
        f"G={g}, {PROMPTS_PER_STEP} prompts/step ({g * PROMPTS_PER_STEP} completions), {length} new tokens, "
        "temperature 1.0, beta 0, "
        f"fp32, {s['micro_batch']} rows per forward/backward; {s['repeats']} repeat(s) x ({s['warmup']} warm-up + "
        f"{s['steps']} timed steps) per framework and size; log-prob pass: median of {s['logprob_repeats']} repeats.",
    ]
    ours = next(iter(report["sizes"].values()))["ours"]["runs"][0]
    trl = next(iter(report["sizes"].values()))["trl"]["runs"][0]
    lines += [
        f"Ours: the project's defaults otherwise (generation_sharing={ours.get('generation_sharing')}, "
        f"logprob_sharing={ours.get('logprob_sharing')}); end tokens masked in our sampler: "
        f"{'yes' if ours.get('forced_length') else 'NO'}; TRL: min_new_tokens={length}. "
        f"Setup RSS (after imports, model and trainer construction): ours {ours['setup_rss_mb']:.0f} MB, "
        f"TRL {trl['setup_rss_mb']:.0f} MB. TRL s/step is on_step_begin to on_step_end (its data loading excluded). "
        "Rows with rollout_engine=vllm: peak RSS is the trainer's and the vLLM server's together, and s/step "
        "includes the weight push after the optimizer step.",
        "",
    ]
    for size, e in report["sizes"].items():
        px = image_side(int(size), s.get("family", "qwen2-vl"))
        lines += [
            f"### {size} image tokens per prompt ({px}x{px} px)",
            "",
            "| run | median s/step | completions/s | peak RSS MB | mean completion length | ours/TRL completions/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, (_, _, _, name) in VARIANTS.items():
            if key not in e:
                continue
            r = e[key]
            ratio = (
                f"**{e['ratio_vs_trl']:.2f}x**"
                if key == "ours"
                else ("1.00x" if key == "trl" else f"({r['completions_per_s'] / e['trl']['completions_per_s']:.2f}x)")
            )
            lines.append(
                f"| {name} | {r['median_step_s']:.3f} | {r['completions_per_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                f"{r['mean_completion_length']:.1f} | {ratio} |"
            )
        phases = []
        others = (("ours4", "ours k=4"), ("ours_both_none", "ours both off"))
        others += (("ours_vllm", "ours vllm"), ("ours_vllm_overlap", "ours vllm overlap"))  # where overlap's time goes
        for key, name in others:
            if key in e:
                parts = ", ".join(f"{k} {v:.3f}" for k, v in e[key]["phases_median_s"].items())
                phases.append(f"{name}: {parts}")
        lines += ["", *phase_table(e["ours"], e["trl"]), ""]
        if phases:
            lines += ["Other phase medians (s/step): " + "; ".join(phases) + "."]
        if "logprob" in e:
            lp = e["logprob"]
            lines += [
                f"Log-prob pass with gradients over {lp['rows']} rows (prompt {lp['prompt_tokens']} tokens padded, "
                f"{lp['completion_tokens']} completion tokens): prefix {lp['prefix_s']:.3f} s, none (per row) "
                f"{lp['none_s']:.3f} s, **speedup {lp['speedup']:.2f}x**."
            ]
        lines += [""]
    lines += ["Final JSON line:", "", "```json", json.dumps(report["summary"]), "```"]
    return "\n".join(lines)


def phase_seconds(ours: dict, trl: dict) -> dict[str, tuple[float, float]]:
    """Median seconds per step of each phase, (ours, TRL); NaN where a framework has no such phase.
    "other" is the median step less the phases: metrics and bookkeeping (TRL: also data loading and
    prompt processing, which it does inside its rollout)."""
    o, t, nan = ours["phases_median_s"], trl["phases_median_s"], float("nan")
    rows = {
        "data loading": (o["data"], nan),
        "prompt encoding": (o["encode"], nan),
        "sampling": (o["sampling"], t["generate"]),
        "scoring": (o["scoring"], t["rewards"]),
        "remedies (injection)": (o["remedies"], nan),
        "rollout-time log-probs": (o["rollout_logprobs"], nan),
        "update (forward, backward, optimizer)": (o["update"], trl["median_step_s"] - t["generate_and_score"]),
        "weight push to the engine": (o["weight_sync"], nan),
    }
    rows["other"] = (
        ours["median_step_s"] - sum(v[0] for v in rows.values()),
        t["generate_and_score"] - t["generate"] - t["rewards"],
    )
    return rows


def phase_table(ours: dict, trl: dict) -> list[str]:
    """Each phase's seconds and share of the step, ours and TRL (markdown lines)."""

    def cell(seconds: float, step: float) -> str:
        return "-" if seconds != seconds else f"{seconds:.3f} ({100 * seconds / step:.0f} %)"

    lines = ["| phase (median s/step, share) | ours | TRL |", "|---|---:|---:|"]
    for name, (mine, theirs) in phase_seconds(ours, trl).items():
        lines.append(f"| {name} | {cell(mine, ours['median_step_s'])} | {cell(theirs, trl['median_step_s'])} |")
    lines.append(f"| whole step | {ours['median_step_s']:.3f} | {trl['median_step_s']:.3f} |")
    return lines


def write_results(path: Path, report: dict) -> None:
    """Replace the generated block of the results file, keeping any hand-written text around it."""
    settings = report["settings"]
    begin = begin_marker(settings.get("family", "qwen2-vl"), settings.get("engine", "hf"), settings["new_tokens"])
    write_block(path, begin, render_tables(report))


def write_block(path: Path, begin: str, body: str) -> None:
    """`body` between `begin` and the END marker in `path`: the old block replaced, or appended."""
    block = f"{begin}\n{body}\n{END}"
    text = path.read_text() if path.is_file() else "# Step throughput: ours vs TRL\n\n"
    if begin in text and END in text.split(begin, 1)[-1]:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
