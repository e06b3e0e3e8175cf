#!/usr/bin/env python
"""One GRPO step (or one update) of ours and TRL's GRPOTrainer at the shapes real users train at.

What runs, each case and framework in a child process of its own:

* a random-weight model built from a real configuration in ``benchmarks/configs/`` (Qwen2-VL-2B-Instruct
  by default; ``--models`` adds Qwen2.5-VL-3B-Instruct and Qwen3-VL-2B-Instruct) with the real
  vocabulary (151,936) and the real widths, its depth cut to ``--text-layers`` decoder layers and
  ``--vision-blocks`` vision blocks (1 and 1 by default, what a 24 GB CPU machine holds;
  ``--full-depth`` keeps the checkpoint's, for a GPU);
* one square image of about 256 or 1,024 image tokens (Qwen2-VL: 28 px per merged token, 448 and
  896 px; Qwen3-VL: 32 px), 1 prompt x G 4 completions of exactly C = 256, 1,024 or 4,096 tokens
  (end tokens impossible on both sides: TRL ``generation_kwargs={"min_new_tokens": C}``, ours
  ``step_throughput.forbid_end_tokens``), beta 0, fp32, num_iterations 1, full fine-tuning, one process;
* with ``--video-frames N`` (or a third field in ``--cases``, IMAGE:C:N), a video of N frames instead of
  the image, each frame the image's size: Qwen merges 2 frames per temporal patch, so a frame pair costs
  what the image did and N frames of I tokens each cost N/2 x I video tokens (8 frames at 256: 1,024);
  ours only, TRL's side reported as not run (its GRPOTrainer takes no video);
* the memory options a TRL user sets at these lengths, on both sides where the project has the
  same: activation checkpointing (TRL ``gradient_checkpointing=True``, its default; ours
  ``gradient_checkpointing=true``) and one row per forward/backward (TRL
  ``per_device_train_batch_size=1``, ``gradient_accumulation_steps=4`` and so
  ``steps_per_generation=4``: one optimizer step per GRPO step; ours ``micro_batch_size=1``, and
  ``micro_batch_tokens`` where this version of the project has it); ours otherwise at the
  project's defaults;
* the unit of a case, the same on both sides: a *step* (sampling, scoring, the update) where
  C <= ``--step-max-tokens`` (256 on CPU, every C on CUDA), else an *update*: the log-prob
  passes, loss, backward and optimizer step on a fixed batch of completions of exactly C tokens
  (ours: a rollout engine registered here that returns them, so the trainer's own step runs
  around them and its clock times the update; TRL: its ``_generate_single_turn`` returns them,
  and the update is its step less ``_generate_and_score_completions``). Sampling 4,096 tokens
  with a 152k vocabulary takes many minutes on a CPU;
* peak memory: the child's peak RSS (``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated``
  on CUDA; seconds per step or update (median of ``--steps``). A child that runs out of memory
  (on CPU: past ``--memory-limit-mb`` of data, RLIMIT_DATA) or time (``--case-timeout``) is
  reported as such;
* how peak memory grows with C, per framework and image size: the log-log slope and the linear
  slope (MiB per 1,000 completion tokens) over the C values measured.

The last line printed is one JSON object, ``{"cases": [{"model": ..., "image_tokens": I,
"completion_tokens": C, "peak_mb": {"ours": m, "trl": m}, "s": {"ours": s, "trl": s}, ...}, ...],
"growth": [...], ...}`` (null where a side ran out of memory or time, or was not run, and why in ``status``).
A video case's ``image_tokens`` is its tokens per frame pair; it adds ``video_frames``, ``video_tokens``
(N/2 x I), ``video_tokens_actual`` and ``not_run`` (why a side was not run).

    python benchmarks/real_shapes.py --quick     # qwen2-vl-2b, 256 image tokens, C 1,024, both sides
    python benchmarks/real_shapes.py             # qwen2-vl-2b, 2 image sizes x 3 lengths
    python benchmarks/real_shapes.py --models qwen2-vl-2b-instruct,qwen3-vl-2b-instruct --completion-tokens 4096
    python benchmarks/real_shapes.py --device cuda --full-depth   # on a GPU, the checkpoints' depth
    python benchmarks/real_shapes.py --cases 1024:256,256:256:8 --frameworks ours   # 1,024 image vs video tokens
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_step import CONFIGS, FAMILY, MODELS, checkpoint_config, step_timer  # noqa: E402
from step_throughput import (  # noqa: E402
    children_cpu_s,
    cpu_busy_s,
    forbid_end_tokens,
    image_side,
    machine,
    rss_mb,
    timed,
)

G, PROMPTS = 4, 1
IMAGE_TOKENS = (256, 1024)
COMPLETION_TOKENS = (256, 1024, 4096)
FRAMEWORKS = ("ours", "trl")
FIXED_ENGINE = "real-shapes-fixed"
SEED = 0
# Why TRL's CPU numbers overstate its GPU memory and time (trl/trainer/utils.py add_fused_lm_head,
# trl/kernels/chunked_logprob.py): its log-probs come from a chunked LM head in 4,096-token x 32,768-id
# tiles; without Triton it projects every position, the prompt's included, and folds each tile with torch
# operations that allocate tile-sized temporaries, where on a GPU a Triton kernel folds the scored
# positions in place.
TRL_ON_CPU = (
    "TRL on CPU: its fused LM head (4,096-token x 32,768-id tiles) projects every position, the prompt's "
    "too, and folds each tile with tile-sized torch temporaries; on a GPU Triton scores only completion "
    "positions, in place."
)
# Frames per temporal patch in the Qwen families here (temporal_patch_size): one frame pair costs one frame's tokens.
TEMPORAL_PATCH = 2
# Why TRL's side of a video case is not run (trl/trainer/grpo_trainer.py: _signature_columns, the processor call).
TRL_NO_VIDEO = (
    "TRL's GRPOTrainer takes no video: its dataset keeps only the prompt, image and images columns, and its "
    "processor call passes images only"
)
# Messages that mean "out of memory" in a child's error (CPU allocator, CUDA caching allocator).
OOM_MARKS = ("can't allocate memory", "out of memory", "cannot allocate memory", "memoryerror")


@dataclasses.dataclass
class Case:
    """One measurement: a model, an image size (or a video), a completion length, a unit, one framework."""

    model: str
    image_tokens: int
    completion_tokens: int
    unit: str  # "step" or "update"
    framework: str
    device: str
    workdir: str
    text_layers: int | None  # None: the checkpoint's depth
    vision_blocks: int | None
    tiny: bool = False  # gpu_step's shrunk widths and vocabulary: the smoke test
    threads: int = 2
    warmup: int = 0
    steps: int = 1
    rows_per_pass: int = 1
    gradient_checkpointing: bool = True
    micro_batch_tokens: int | None = None  # None: one whole row (prompt + C)
    memory_limit_mb: int | None = None
    # 0: the prompt shows one image of `image_tokens`; N: a video of N frames instead, each frame that image's
    # size, so `image_tokens` per frame pair and ceil(N / 2) x image_tokens video tokens.
    video_frames: int = 0


def video_tokens(case: Case) -> int:
    """The video tokens a case's prompt shows: one frame's tokens per frame pair (the last frame repeated)."""
    return -(-case.video_frames // TEMPORAL_PATCH) * case.image_tokens


def not_run(case: Case) -> str | None:
    """Why `case` is not run (None: it is)."""
    return TRL_NO_VIDEO if case.video_frames and case.framework == "trl" else None


# ------------------------------------------------------------------------------------------ the model
def cut_depth(config, text_layers: int | None, vision_blocks: int | None):
    """`config` with its first `text_layers` decoder layers and `vision_blocks` vision blocks (None:
    all); the per-layer lists that name later layers keep only the kept ones."""
    text, vision = config.text_config, config.vision_config
    if text_layers is not None:
        text.num_hidden_layers = text_layers
        if getattr(text, "layer_types", None):
            text.layer_types = text.layer_types[:text_layers]
    if vision_blocks is not None:
        vision.depth = vision_blocks
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if getattr(vision, key, None):
                setattr(vision, key, [i for i in getattr(vision, key) if i < vision_blocks])
    return config


def build(case: Case):
    """(fp32 model on the case's device, processor, family, depth) with random weights from SEED."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlm_grpo.models.families import family_named
    from vlm_grpo.models.tiny import QWEN_CHAT_TEMPLATE, build_tokenizer
    from vlm_grpo.models.tiny.qwen import qwen2_vl_images, qwen3_vl_images

    tokenizer = build_tokenizer()
    config = checkpoint_config(case.model, case.tiny, tokenizer)
    full = {"checkpoint_text_layers": config.text_config.num_hidden_layers}
    full["checkpoint_vision_blocks"] = config.vision_config.depth
    if not case.tiny:
        config = cut_depth(config, case.text_layers, case.vision_blocks)
    family = FAMILY[config.model_type]
    torch.manual_seed(SEED)
    with torch.device(case.device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    side = image_side(case.image_tokens, family)
    images = qwen3_vl_images if family.startswith("qwen3") else qwen2_vl_images
    processor = family_named(family).make_processor(images(side * side), tokenizer, QWEN_CHAT_TEMPLATE)
    if case.video_frames:
        from vlm_grpo.data.videos import VideoConfig
        from vlm_grpo.models.families.frames import apply_video_settings

        # Each frame the image's size: the per-frame budget would otherwise shrink frames above 768 tokens.
        apply_video_settings(processor, VideoConfig(max_pixels=side * side))
    depth = {"text_layers": config.text_config.num_hidden_layers, "vision_blocks": config.vision_config.depth, **full}
    return model, processor, family, depth


def prompt_row(case: Case, family: str) -> dict:
    """The case's one prompt: a rendered counting scene, square, of about `image_tokens` tokens; with
    `video_frames`, a video of that many scenes of that size (a list of frames, as a Sample's video)."""
    from vlm_grpo.lab.scenes import render_scene

    side = image_side(case.image_tokens, family)
    image, scene = render_scene("lab-clevr", SEED, size=side)
    row = {"question": scene.question, "answer": str(scene.count)}
    if not case.video_frames:
        return row | {"image": image.convert("RGB")}
    # Distinct scenes, so that no two frames of a pair are alike: the vision tower's work is a real video's.
    frames = [render_scene("lab-clevr", SEED + i, size=side)[0].convert("RGB") for i in range(case.video_frames)]
    return row | {"video": frames}


def prompt_tokens(processor, row: dict) -> tuple[int, int]:
    """(prompt tokens, image or video tokens) of `row` as both frameworks encode it (a video: as ours does)."""
    kind = "video" if "video" in row else "image"
    messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": row["question"]}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if kind == "image":
        batch = processor(text=[text], images=[row["image"]], return_tensors="pt")
    else:
        from vlm_grpo.data.videos import decode_video
        from vlm_grpo.models.families.frames import frame_sampling, video_call

        video = decode_video(row["video"], frame_sampling(processor), "real-shapes")
        batch = processor(text=[text], **video_call(processor, [video]), return_tensors="pt")
    merge = processor.image_processor.merge_size**2
    return int(batch["input_ids"].shape[1]), int(batch[f"{kind}_grid_thw"].prod(-1).sum()) // merge


def fixed_completions(processor, length: int):
    """(G, length) token ids, the same on both sides: ordinary tokens of the local tokenizer (its
    special ids, end tokens among them, come first), so every row is exactly `length` tokens."""
    import torch

    from vlm_grpo.models.tiny import special_ids

    first = max(special_ids(processor.tokenizer).values()) + 1
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(first, len(processor.tokenizer), (G * PROMPTS, length), generator=generator)


def variety(completions, **kwargs) -> list[float]:
    """A reward that differs between rows (distinct characters), so advantages are not all zero."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(t)) / 100.0 for t in texts]


# ------------------------------------------------------------------------------------------ ours
class FixedEngine:
    """A rollout engine that samples nothing: every prompt's G rows are the fixed completions (an
    update on them, through the trainer's own step). Registered through the public engine registry."""

    name, own_logprobs = FIXED_ENGINE, False

    def __init__(self, model, processor, ids):
        self.processor, self.ids = processor, ids
        self.device = next(model.parameters()).device

    def sample(self, prompts, params, prefixes=None):
        import torch

        from vlm_grpo.rollout import Completions

        ids = self.ids[: len(prompts.samples) * params.group_size]
        texts = self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        ids = ids.to(self.device)  # where the hf engine's completions are
        truncated = torch.ones(ids.size(0), dtype=torch.bool, device=self.device)  # no end token: cut at C
        return Completions(ids, torch.ones_like(ids), truncated, texts)

    def submit(self, prompts, params):
        from concurrent.futures import Future

        future: Future = Future()
        future.set_result(self.sample(prompts, params))
        return future

    def evaluator(self):
        return self

    def update_weights(self, model) -> float:
        return 0.0

    def close(self) -> None:
        pass


def our_config(case: Case, row_tokens: int):
    """Ours at the project's defaults, with the memory options matched to TRL's."""
    from vlm_grpo import GRPOConfig
    from vlm_grpo.config import TrainConfig

    extra = {}
    # The token-budget micro-batches of newer versions: a budget of one whole row (one row per pass,
    # as TRL's) unless asked otherwise; older versions have no such key and run micro_batch_size rows.
    if "micro_batch_tokens" in {f.name for f in dataclasses.fields(TrainConfig)}:
        extra["micro_batch_tokens"] = row_tokens if case.micro_batch_tokens is None else case.micro_batch_tokens
    return GRPOConfig(
        output_dir=str(Path(case.workdir) / f"ours-{os.getpid()}"),
        max_steps=case.warmup + case.steps,
        num_generations=G,
        prompts_per_step=PROMPTS,
        num_iterations=1,
        max_completion_length=case.completion_tokens,
        micro_batch_size=case.rows_per_pass,
        gradient_checkpointing=case.gradient_checkpointing,
        temperature=1.0,
        beta=0.0,
        learning_rate=1e-6,
        precision="fp32",
        device=case.device,
        seed=SEED,
        save_steps=1_000_000,
        log_completions_steps=0,
        report_to=[],
        progress=False,
        rollout_engine=FIXED_ENGINE if case.unit == "update" else "hf",
        **extra,
    )


def run_ours(case: Case, model, processor, row: dict, row_tokens: int) -> dict:
    from vlm_grpo import GRPOTrainer
    from vlm_grpo.rollout import register_engine

    if case.unit == "update":
        ids = fixed_completions(processor, case.completion_tokens)
        register_engine(FIXED_ENGINE, lambda m, p, options: FixedEngine(m, p, ids), replace=True)
    args = our_config(case, row_tokens)
    trainer = GRPOTrainer(
        model=model, reward_funcs=[variety], args=args, train_dataset=[row], processing_class=processor
    )
    trainer.trainer.save = lambda step: None  # no checkpoint: untimed, but its memory would count
    setup_mb = memory_mb(case.device)
    trainer.train()  # its metrics time each phase of each step (time/<phase>_s)
    records = [json.loads(line) for line in (Path(args.output_dir) / "metrics.jsonl").read_text().splitlines()]
    timed_records = records[case.warmup :]
    step_s = [r["time/step_s"] for r in timed_records]
    # The update: the log-prob passes (rollout-time ones too, none at num_iterations 1), loss, backward, optimizer.
    update_s = [r["time/update_s"] + r.get("time/rollout_logprobs_s", 0.0) for r in timed_records]
    cfg = trainer.trainer.cfg  # as the trainer resolved it (logprob_sharing=auto becomes the pass it runs)
    knobs = {k: getattr(cfg, k) for k in ("logprob_sharing", "micro_batch_size", "gradient_checkpointing")}
    knobs["micro_batch_tokens"] = getattr(cfg, "micro_batch_tokens", "no such key in this version")
    return {
        "s": statistics.median(step_s if case.unit == "step" else update_s),
        "step_s": step_s,
        "update_s": update_s,
        "mean_completion_length": statistics.fmean(r["completion/mean_length"] for r in timed_records),
        "setup_mb": setup_mb,
        "settings": knobs,
    }


# ------------------------------------------------------------------------------------------ TRL


def trl_config(case: Case):
    """TRL as its user sets it at these lengths: checkpointing, one row per forward/backward."""
    import trl

    return trl.GRPOConfig(
        output_dir=str(Path(case.workdir) / f"trl-{os.getpid()}"),
        seed=SEED,
        per_device_train_batch_size=case.rows_per_pass,
        gradient_accumulation_steps=G * PROMPTS // case.rows_per_pass,  # steps_per_generation follows it
        gradient_checkpointing=case.gradient_checkpointing,
        num_generations=G,
        max_completion_length=case.completion_tokens,
        generation_kwargs={"min_new_tokens": case.completion_tokens},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        loss_type="bnpo",  # the token mean over the step, as ours
        learning_rate=1e-6,
        max_steps=case.warmup + case.steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_vllm=False,
        bf16=False,
        fp16=False,
        use_cpu=case.device == "cpu",
        dataloader_num_workers=0,
        log_completions=False,
    )


def run_trl(case: Case, model, processor, row: dict, row_tokens: int) -> dict:
    import datasets
    import trl

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}]
    dataset = datasets.Dataset.from_dict({"prompt": [messages] * G, "image": [row["image"]] * G})
    timer = step_timer()
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=variety,
        args=trl_config(case),
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[timer],
    )
    if case.unit == "update":
        ids = fixed_completions(processor, case.completion_tokens)

        def fixed(prompt_ids, *args, **kwargs):  # rows in generation order, each exactly C tokens
            return [ids[i % len(ids)].tolist() for i in range(len(prompt_ids))], None

        trainer._generate_single_turn = fixed
    phases: dict[str, list[float]] = {"generate_and_score": []}
    trainer._generate_and_score_completions = timed(
        phases, "generate_and_score", trainer._generate_and_score_completions
    )
    setup_mb = memory_mb(case.device)
    trainer.train()
    step_s = timer.step_s[case.warmup :]
    # One GRPO step is one of TRL's optimizer steps here (4 accumulated rows); its rollout is inside it.
    update_s = [s - g for s, g in zip(step_s, phases["generate_and_score"][case.warmup :])]
    lengths = timer.lengths[case.warmup :]
    args = trainer.args
    return {
        "s": statistics.median(step_s if case.unit == "step" else update_s),
        "step_s": step_s,
        "update_s": update_s,
        "mean_completion_length": statistics.fmean(lengths) if lengths else None,
        "setup_mb": setup_mb,
        "settings": {
            "gradient_checkpointing": args.gradient_checkpointing,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "steps_per_generation": args.steps_per_generation,
        },
    }


# ------------------------------------------------------------------------------------------ children
def child(case: Case) -> dict:
    """One case, one framework, in this process: build, run, measure."""
    if case.memory_limit_mb and case.device == "cpu":
        # A bounded data segment turns running out of memory into an allocation error this child reports,
        # instead of the kernel's OOM killer picking a process on a shared machine.
        limit = case.memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    import torch

    torch.set_num_threads(case.threads)
    forced = forbid_end_tokens()  # ours: end tokens impossible in sampling (TRL: min_new_tokens)
    model, processor, family, depth = build(case)
    row = prompt_row(case, family)
    prompt, image = prompt_tokens(processor, row)
    if case.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = run_ours if case.framework == "ours" else run_trl
    result = run(case, model, processor, row, prompt + case.completion_tokens)
    cuda = case.device == "cuda"
    return result | {
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mb(),
        "peak_rss_mb": rss_mb(),
        "peak_measure": "torch.cuda.max_memory_allocated" if cuda else "ru_maxrss",
        "forced_length": forced,
        "family": family,
        "depth": depth,
        "prompt_tokens": prompt,
        "video_tokens_actual" if case.video_frames else "image_tokens_actual": image,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
    }


def memory_mb(device: str) -> float:
    """Memory in use now on the device (CUDA: allocated by torch), else this process's peak RSS so far."""
    if device == "cuda":
        import torch

        return torch.cuda.memory_allocated() / 2**20
    return rss_mb()


def is_oom(text: str) -> bool:
    text = text.lower()
    return any(mark in text for mark in OOM_MARKS)


def child_main(raw: str) -> int:
    """Runs one case and prints `RESULT {json}`; a failure is a result too (status oom or error)."""
    import traceback

    case = Case(**json.loads(raw))
    try:
        result = {"status": "ok", **child(case)}
    except Exception as exc:  # whatever failed, the parent reports it and goes on
        traceback.print_exc()
        text = f"{type(exc).__name__}: {exc}"
        result = {"status": "oom" if is_oom(text) else "error", "error": text[-1000:], "peak_mb": rss_mb()}
    print("RESULT " + json.dumps(result), flush=True)
    return 0 if result["status"] == "ok" else 1


# ------------------------------------------------------------------------------------------ parent
def child_env(threads: int) -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "TQDM_DISABLE": "1",
        "PYTHONWARNINGS": "ignore",
    }


def run_case(case: Case, timeout_s: float) -> dict:
    """`case` in a child process; its result, or why there is none (timeout, oom, error)."""
    video = f"_video{case.video_frames}" if case.video_frames else ""
    name = f"{case.model}_{case.image_tokens}{video}_{case.completion_tokens}_{case.framework}.log"
    log = Path(case.workdir) / "logs" / name
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(dataclasses.asdict(case))]
    t0, busy0, cpu0 = time.perf_counter(), cpu_busy_s(), children_cpu_s()
    with log.open("w") as handle:
        try:
            proc = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=handle,
                text=True,
                env=child_env(case.threads),
                timeout=timeout_s,
            )
            stdout, code = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as exc:  # run() has killed the child
            stdout, code = exc.stdout or "", None
    wall = time.perf_counter() - t0
    handle_text = log.read_text()
    log.write_text(handle_text + f"\n--- stdout ---\n{stdout}")
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if code is None:
        result = {"status": "timeout", "error": f"no result within {timeout_s:.0f} s"}
    elif lines:
        result = json.loads(lines[-1][len("RESULT ") :])
    else:  # killed (the kernel's OOM killer sends SIGKILL) or aborted (bad_alloc)
        oom = code == -9 or is_oom(handle_text[-3000:])
        result = {"status": "oom" if oom else "error", "error": f"exit {code}; see {log}"}
    # Cores other processes kept busy meanwhile: the machine's busy time less the child's own.
    other = (cpu_busy_s() - busy0 - (children_cpu_s() - cpu0)) / wall
    return result | {"wall_s": wall, "other_cores": max(0.0, other), "log": str(log)}


def pick_unit(completion_tokens: int, a: argparse.Namespace) -> str:
    if a.unit != "auto":
        return a.unit
    return "step" if completion_tokens <= a.step_max_tokens else "update"


def cases_of(a: argparse.Namespace, work: Path) -> list[list[Case]]:
    """Every case, both frameworks of one case together (ours, then TRL)."""
    depth = (None, None) if a.full_depth else (a.text_layers, a.vision_blocks)
    out = []
    for model in a.models:
        for image in a.image_tokens:
            for length in a.completion_tokens:
                common = dict(model=model, image_tokens=image, completion_tokens=length, unit=pick_unit(length, a))
                common |= dict(video_frames=a.video_frames)
                common |= dict(device=a.device, workdir=str(work), text_layers=depth[0], vision_blocks=depth[1])
                common |= dict(tiny=a.tiny, threads=a.threads, warmup=a.warmup, steps=a.steps)
                common |= dict(rows_per_pass=a.rows_per_pass, gradient_checkpointing=not a.no_gradient_checkpointing)
                common |= dict(micro_batch_tokens=a.micro_batch_tokens, memory_limit_mb=a.memory_limit_mb)
                out.append([Case(framework=f, **common) for f in a.frameworks])
    return out


def case_entry(pair: list[Case], results: dict[str, dict]) -> dict:
    """One case's row of the JSON: the required keys, then what explains them."""
    first = pair[0]

    def each(key):
        return {f: results[f].get(key) if results[f].get("status") == "ok" else None for f in results}

    ok = next((r for r in results.values() if r.get("status") == "ok"), {})
    entry = {
        "model": first.model,
        "image_tokens": first.image_tokens,
        "completion_tokens": first.completion_tokens,
        "peak_mb": each("peak_mb"),
        "s": each("s"),
        "unit": first.unit,
        "status": {f: r["status"] for f, r in results.items()},
        "errors": {f: r["error"] for f, r in results.items() if r.get("error")},
        "setup_mb": each("setup_mb"),
        "mean_completion_length": each("mean_completion_length"),
        "prompt_tokens": ok.get("prompt_tokens"),
        "image_tokens_actual": ok.get("image_tokens_actual"),
        "depth": ok.get("depth"),
        "parameters": ok.get("parameters"),
        "settings": each("settings"),
        "wall_s": {f: r["wall_s"] for f, r in results.items()},
        "other_cores": {f: r["other_cores"] for f, r in results.items()},
    }
    if first.video_frames:  # keys only a video case has: an image case's row is as it was
        entry |= {"video_frames": first.video_frames, "video_tokens": video_tokens(first)}
        entry |= {"video_tokens_actual": ok.get("video_tokens_actual")}
        entry |= {"not_run": {f: r["reason"] for f, r in results.items() if r.get("reason")}}
    return entry


# ------------------------------------------------------------------------------------------ growth
def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def growth(cases: list[dict]) -> list[dict]:
    """Per model, framework and image size with 2+ lengths measured: how peak memory grows with C.
    `exponent`: the log-log slope of the peak; `mb_per_1k_tokens`: the linear slope; the peak holds
    a fixed part (weights, gradients, Adam state), so `exponent_above_setup` fits the peak less the
    child's memory before its first step, closer to what the lengths themselves cost."""
    points: dict[tuple, list[tuple]] = {}
    for case in cases:
        for framework, peak in case["peak_mb"].items():
            if peak is not None:
                key = (case["model"], framework, case["image_tokens"], case.get("video_frames", 0))
                points.setdefault(key, []).append(
                    (case["completion_tokens"], peak, case["setup_mb"][framework], case["unit"])
                )
    fits = []
    for (model, framework, image, frames), rows in points.items():
        if len({c for c, *_ in rows}) < 2:
            continue
        cs, peaks = [float(c) for c, *_ in rows], [p for _, p, _, _ in rows]
        above = [max(p - s, 1.0) for _, p, s, _ in rows]
        fit = {
            "model": model,
            "framework": framework,
            "image_tokens": image,
            "completion_tokens": [int(c) for c in cs],
            "units": sorted({u for *_, u in rows}),
            "exponent": slope([math.log(c) for c in cs], [math.log(p) for p in peaks]),
            "exponent_above_setup": slope([math.log(c) for c in cs], [math.log(p) for p in above]),
            "mb_per_1k_tokens": 1000 * slope(cs, peaks),
        }
        fits.append(fit | ({"video_frames": frames} if frames else {}))
    return fits


# ------------------------------------------------------------------------------------------ report
def fmt(value, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def ratio(a, b) -> str:
    return "-" if a is None or b is None or not b else f"{a / b:.2f}x"


def vision_cell(case: dict) -> str:
    """What the prompt shows, and its prompt tokens: `I (P)` for an image, the video's frames and tokens else."""
    prompt = fmt(case["prompt_tokens"], "d", "?")
    if not case.get("video_frames"):
        return f"{case['image_tokens']} ({prompt})"
    frames = f"video {case['video_frames']} frames x {case['image_tokens']}/{TEMPORAL_PATCH}"
    return f"{frames} = {case['video_tokens']} ({prompt})"


def case_table(cases: list[dict]) -> list[str]:
    lines = [
        "| model | image tokens (prompt) | C | unit | ours s | TRL s | ours/TRL s | ours peak MiB (setup) | "
        "TRL peak MiB (setup) | ours/TRL peak |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        cells = []
        for f in FRAMEWORKS:
            status = c["status"].get(f, "not run")
            peak = c["peak_mb"].get(f)
            cells.append(f"{peak:.0f} ({c['setup_mb'][f]:.0f})" if peak is not None else f"**{status}**")
        s = c["s"]
        lines.append(
            f"| {c['model']} | {vision_cell(c)} | {c['completion_tokens']} | "
            f"{c['unit']} | {fmt(s.get('ours'))} | {fmt(s.get('trl'))} | {ratio(s.get('ours'), s.get('trl'))} | "
            f"{cells[0]} | {cells[-1]} | {ratio(c['peak_mb'].get('ours'), c['peak_mb'].get('trl'))} |"
        )
    return lines


def video_note(fit: dict) -> str:
    return f" per frame pair, video of {fit['video_frames']} frames" if fit.get("video_frames") else ""


def growth_table(fits: list[dict]) -> list[str]:
    if not fits:
        return ["(no growth fit: fewer than two completion lengths measured per framework and image size)"]
    lines = [
        "| model | framework | image tokens | C measured | units | exponent (peak) | exponent (above setup) | "
        "MiB per 1,000 tokens |",
        "|---|---|---:|---|---|---:|---:|---:|",
    ]
    for g in fits:
        lines.append(
            f"| {g['model']} | {g['framework']} | {g['image_tokens']}{video_note(g)} | "
            f"{', '.join(map(str, g['completion_tokens']))} "
            "| "
            f"{'+'.join(g['units'])} | {g['exponent']:.2f} | {g['exponent_above_setup']:.2f} | "
            f"{g['mb_per_1k_tokens']:.0f} |"
        )
    return lines


def header(report: dict) -> list[str]:
    m, s = report["machine"], report["settings"]
    depths = {c["model"]: c["depth"] for c in report["cases"] if c["depth"]}
    depth = "; ".join(
        f"{name} {d['text_layers']} of {d['checkpoint_text_layers']} text layers, {d['vision_blocks']} of "
        f"{d['checkpoint_vision_blocks']} vision blocks"
        for name, d in depths.items()
    )
    ours = next((c["settings"]["ours"] for c in report["cases"] if c["settings"].get("ours")), {}) or {}
    trl = next((c["settings"]["trl"] for c in report["cases"] if c["settings"].get("trl")), {}) or {}
    cuda = s["device"] == "cuda"
    peak = "torch.cuda.max_memory_allocated" if cuda else "peak RSS of the child (ru_maxrss)"
    return [
        f"Real shapes: ours vs TRL {m['trl']} GRPOTrainer on {s['device']} ({m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB; torch {m['torch']}, transformers {m['transformers']}), {report['wall_s'] / 60:.1f} min.",
        f"Models: random weights from benchmarks/configs/, real vocabulary and widths"
        f"{' (tiny: shrunk widths and vocabulary)' if s['tiny'] else ''}; depth: {depth}.",
        f"Shape: {PROMPTS} prompt x G {G}, beta 0, fp32, num_iterations 1, full fine-tuning, one process; every "
        "completion exactly C tokens (end tokens impossible on both sides).",
        f"Ours: project defaults, with {json.dumps(ours)}.",
        f"TRL: {json.dumps(trl)} (one row per forward/backward, one optimizer step per GRPO step).",
        "Units: step = sampling + scoring + update; update = log-prob passes + loss + backward + optimizer step "
        f"on fixed completions of exactly C tokens (step where C <= {s['step_max_tokens']}, unless --unit).",
        f"Peak memory: {peak}, MiB; setup = the same measure before the first step (model and trainer built). "
        "Seconds: median of "
        f"{s['steps']} timed step(s) after {s['warmup']} warm-up.",
    ] + ([TRL_ON_CPU] if not cuda else [])


def video_lines(report: dict) -> list[str]:
    """The header's note on video cases (none without them)."""
    if not any(c.get("video_frames") for c in report["cases"]):
        return []
    return [
        f"Video cases: N frames instead of the image, each frame the image's size; {TEMPORAL_PATCH} frames per "
        f"temporal patch, so N frames of I tokens each cost N/{TEMPORAL_PATCH} x I video tokens. Ours only: "
        f"{TRL_NO_VIDEO}."
    ]


def render(report: dict) -> str:
    lines = header(report) + video_lines(report)
    lines += ["", *case_table(report["cases"]), "", "How peak memory grows with C:", ""]
    lines += growth_table(report["growth"])
    short = [
        f"{c['model']} I={c['image_tokens']} C={c['completion_tokens']} {f} (mean {length:.1f})"
        for c in report["cases"]
        for f, length in c["mean_completion_length"].items()
        if length is not None and length != c["completion_tokens"]
    ]
    if short:
        lines += ["", "Warning: completions not exactly C tokens long: " + "; ".join(short) + "."]
    busy = [v for c in report["cases"] for v in c["other_cores"].values()]
    if busy and max(busy) > 0.15:
        lines += ["", f"Note: other processes kept up to {max(busy):.2f} cores busy during a child: timings are noisy."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main
def available_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one case: qwen2-vl-2b, 256 image tokens, C 1,024")
    p.add_argument("--models", default=MODELS[0], help=f"comma separated, of {', '.join(MODELS)}")
    p.add_argument("--image-tokens", default=",".join(map(str, IMAGE_TOKENS)), help="image tokens per prompt")
    p.add_argument("--completion-tokens", default=",".join(map(str, COMPLETION_TOKENS)), help="C values")
    p.add_argument(
        "--cases",
        default=None,
        help="IMAGE:C pairs instead of the two lists, e.g. 256:1024,1024:4096; IMAGE:C:N a video of N frames",
    )
    p.add_argument(
        "--video-frames",
        type=int,
        default=0,
        help="a video of N frames instead of the image, each frame the image's size (N/2 x IMAGE tokens); ours only",
    )
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="ours, trl or both")
    p.add_argument(
        "--unit", choices=("auto", "step", "update"), default="auto", help="auto: step up to --step-max-tokens"
    )
    p.add_argument("--step-max-tokens", type=int, default=None, help="longest C measured as a step (CPU 256; CUDA all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--full-depth", action="store_true", help="the checkpoints' depth (a GPU)")
    p.add_argument("--text-layers", type=int, default=1, help="decoder layers kept (without --full-depth)")
    p.add_argument("--vision-blocks", type=int, default=1, help="vision blocks kept (without --full-depth)")
    p.add_argument("--tiny", action="store_true", help="gpu_step's shrunk widths and vocabulary (the smoke test)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in every child")
    p.add_argument("--warmup", type=int, default=0, help="untimed steps first in every child")
    p.add_argument("--steps", type=int, default=1, help="timed steps per child")
    p.add_argument("--rows-per-pass", type=int, default=1, help="rows per forward/backward, both sides (divides 4)")
    p.add_argument("--no-gradient-checkpointing", action="store_true", help="both sides without it")
    p.add_argument("--micro-batch-tokens", type=int, default=None, help="ours, where the key exists (default: one row)")
    p.add_argument("--case-timeout", type=float, default=None, help="seconds per child (CPU 2400, CUDA 1200)")
    p.add_argument(
        "--memory-limit-mb", type=int, default=None, help="CPU: data limit per child (default: free - 1 GiB)"
    )
    p.add_argument("--workdir", default=None, help="run folders and per-child logs (default: a temporary folder)")
    p.add_argument("--out", default=None, help="also write the whole report as JSON here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return a
    if a.quick:
        a.models, a.cases = MODELS[0], "256:1024"
    return settle(p, a)


def settle(p: argparse.ArgumentParser, a: argparse.Namespace) -> argparse.Namespace:
    """Lists parsed, device-dependent defaults filled in, choices checked."""
    if a.device == "auto":
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    a.models, a.frameworks = a.models.split(","), a.frameworks.split(",")
    a.image_tokens, a.completion_tokens = ints(a.image_tokens), ints(a.completion_tokens)
    a.pairs = [tuple(ints(x.replace(":", ","))) for x in a.cases.split(",")] if a.cases else None
    if a.video_frames < 0 or any(len(pair) not in (2, 3) or min(pair) < 0 for pair in a.pairs or []):
        p.error("--cases takes IMAGE:C or IMAGE:C:FRAMES; --video-frames and FRAMES are 0 (no video) or more")
    for name in a.models:
        if not (CONFIGS / name / "config.json").is_file():
            p.error(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    if set(a.frameworks) - set(FRAMEWORKS) or (G * PROMPTS) % a.rows_per_pass:
        p.error("--frameworks takes ours and/or trl; --rows-per-pass must divide 4")
    if a.step_max_tokens is None:
        a.step_max_tokens = 256 if a.device == "cpu" else 1 << 30
    if a.case_timeout is None:
        a.case_timeout = 2400.0 if a.device == "cpu" else 1200.0
    if a.memory_limit_mb is None and a.device == "cpu":
        free = available_mb()
        a.memory_limit_mb = free - 1024 if free else None
    return a


def main(argv: list[str] | None = None) -> dict | None:
    a = parse(argv)
    if a.child:
        raise SystemExit(child_main(a.child))
    started = time.perf_counter()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="real_shapes_")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cases = []
    for pair in selected(a, work):
        results = {}
        for case in pair:
            reason = not_run(case)
            skipped = {"status": "not run", "reason": reason, "wall_s": 0.0, "other_cores": 0.0}
            results[case.framework] = skipped if reason else run_case(case, a.case_timeout)
            r = results[case.framework]
            video = f" V={case.video_frames}" if case.video_frames else ""
            print(
                f"[{time.strftime('%H:%M:%S')}] {case.model} I={case.image_tokens}{video} C={case.completion_tokens} "
                f"{case.unit} {case.framework}: {r['status']}, s={fmt(r.get('s'), '.2f')}, "
                f"peak={fmt(r.get('peak_mb'), '.0f')} MiB, wall {r['wall_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        cases.append(case_entry(pair, results))
    report = {"cases": cases, "growth": growth(cases), "machine": machine(), "wall_s": time.perf_counter() - started}
    # video_frames only where given: without it the report is as it was before the option.
    hidden = ("child", "quick") if a.video_frames else ("child", "quick", "video_frames")
    report["settings"] = {k: v for k, v in vars(a).items() if k not in hidden} | {"workdir": str(work)}
    report["depth"] = next((c["depth"] for c in cases if c["depth"]), None)
    print(render(report))
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report), flush=True)
    return report


def selected(a: argparse.Namespace, work: Path) -> list[list[Case]]:
    """The cases to run: every image size x length, or only the --cases pairs (and video cases)."""
    pairs = cases_of(a, work)
    if a.pairs:

        def key(pair: list[Case]) -> tuple[int, int, int]:
            return pair[0].image_tokens, pair[0].completion_tokens, pair[0].video_frames

        # (image tokens, C, video frames): a pair without frames has --video-frames'.
        wanted = {(*x, a.video_frames)[:3] for x in a.pairs}
        pairs = [p for p in pairs if key(p) in wanted]
        # --cases may name sizes (or videos) outside the two lists: build those too.
        missing = wanted - {key(p) for p in pairs}
        for image, length, frames in sorted(missing, key=lambda x: (x[2], x[:2])):  # video cases last
            b = {"image_tokens": [image], "completion_tokens": [length], "video_frames": frames}
            pairs += cases_of(argparse.Namespace(**{**vars(a), **b}), work)
    return pairs


if __name__ == "__main__":
    main()
