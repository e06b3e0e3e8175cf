#!/usr/bin/env python
"""GRPO steps on one GPU at the study's setting, real model shapes, ours against TRL's GRPOTrainer.

What runs, for each model (``--models``) and framework (``--frameworks``), in a child process of its own:

* a random-weight model built from the real configuration of Qwen2-VL-2B-Instruct,
  Qwen2.5-VL-3B-Instruct or Qwen3-VL-2B-Instruct (``benchmarks/configs/<name>/config.json``: no
  weights, no network; the special-token ids are remapped to the project's local tokenizer, the
  vocabulary keeps its real size, so the embedding and LM-head cost is the real one);
* CLEVR-sized images (480 x 320, the lab's counting scenes), the study's step: 4 prompts x G 8
  completions of exactly 50 new tokens (end-of-turn tokens made impossible on both sides), 4 GRPO
  epochs per rollout, beta 0, bf16 autocast over fp32 weights (ours: ``precision=bf16-mixed``; TRL:
  ``bf16=True``), one micro-batch of all 32 rows;
* seconds per step, by phase for ours (sampling and scoring, rollout-time log-probs, update) and
  TRL's own split (generation and scoring, the rest), completions per second, peak GPU memory
  (``torch.cuda.max_memory_allocated``) and model FLOPs utilisation: the FLOPs of the per-row
  computation (2 N per token for sampling and each no-grad pass, 6 N per token for each epoch's
  forward and backward, N the language model's non-embedding parameters plus the vision tower's
  over its patches) divided by step time and the GPU's dense bf16 peak (``--peak-tflops``, or
  known from the device name). Shared-prefix passes do less work than that: MFU here compares
  frameworks on the same nominal work, not hardware efficiency.

The last line printed is one JSON object ``{"models": {name: {framework: {...}}}, "device": ...}``.

    python benchmarks/gpu_step.py               # the three models, ours and TRL, on one GPU
    python benchmarks/gpu_step.py --models qwen3-vl-2b-instruct --frameworks ours
    python benchmarks/gpu_step.py --cpu-tiny    # the same path on CPU, each configuration shrunk (a test runs it)
    # ours sampling through vLLM on the same GPU: a server (spawn), or inside the trainer (colocate, run
    # from the environment that has vLLM and this project: make vllm-env builds it)
    make vllm-env VLLM_PACKAGE=vllm==0.33.0 VLLM_TORCH=torch==2.14.0
    python benchmarks/gpu_step.py --engine vllm --vllm-gpu-share 0.35
    .venv-vllm/bin/python benchmarks/gpu_step.py --engine vllm --vllm-mode colocate --frameworks ours
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from step_throughput import forbid_end_tokens, rss_mb, timed  # noqa: E402

CONFIGS = HERE / "configs"
MODELS = ("qwen2-vl-2b-instruct", "qwen2.5-vl-3b-instruct", "qwen3-vl-2b-instruct")
FAMILY = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "qwen3_vl": "qwen3-vl"}
G, PROMPTS, NEW_TOKENS, EPOCHS, IMAGE = 8, 4, 50, 4, (480, 320)
# Dense bf16 peak of known GPUs, in TFLOP/s (vendor data sheets, without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
# Head size 32: the smallest vLLM's CPU attention takes, so that --cpu-tiny also runs with --engine vllm.
TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1
)
TINY_VISION = dict(depth=1, hidden_size=32, embed_dim=32, intermediate_size=64, num_heads=2)


# ------------------------------------------------------------------------------------------ the model
def checkpoint_config(name: str, tiny: bool, tokenizer):
    """The checkpoint's configuration, special ids remapped to `tokenizer`; `tiny` shrinks it for CPU runs."""
    from transformers import AutoConfig

    from vlm_grpo.models.tiny import special_ids

    config = AutoConfig.from_pretrained(CONFIGS / name)
    ids = special_ids(tokenizer)
    config.image_token_id, config.video_token_id = ids["<|image_pad|>"], ids["<|video_pad|>"]
    config.vision_start_token_id, config.vision_end_token_id = ids["<|vision_start|>"], ids["<|vision_end|>"]
    text, vision = config.text_config, config.vision_config
    text.bos_token_id, text.eos_token_id, text.pad_token_id = (
        ids["<|endoftext|>"],
        ids["<|im_end|>"],
        ids["<|endoftext|>"],
    )
    if tiny:
        text.vocab_size = len(tokenizer)  # the real 151,936-way LM head would dominate a CPU run
        for key, value in TINY_TEXT.items():
            setattr(text, key, value)
        if getattr(text, "layer_types", None):  # one attention type per layer, as many as the layers
            text.layer_types = text.layer_types[: TINY_TEXT["num_hidden_layers"]]
        head_dim = TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"]
        if getattr(text, "head_dim", None):  # Qwen3-VL states it; the Qwen2 families derive it
            text.head_dim = head_dim
        half = head_dim // 2  # M-RoPE's temporal / height / width split of the rotary half
        text.rope_parameters["mrope_section"] = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
        for key, value in TINY_VISION.items():
            if hasattr(vision, key):
                setattr(vision, key, value)
        if hasattr(vision, "out_hidden_size"):
            vision.out_hidden_size = TINY_TEXT["hidden_size"]
        if config.model_type == "qwen2_vl":
            vision.hidden_size = TINY_TEXT["hidden_size"]  # Qwen2-VL's merger output width
        if hasattr(vision, "fullatt_block_indexes"):
            vision.fullatt_block_indexes = [0]
        if hasattr(vision, "deepstack_visual_indexes"):
            vision.deepstack_visual_indexes = [0]
    return config


def build(name: str, tiny: bool, device: str, seed: int = 0):
    """(model in fp32 on `device`, processor, family) of one configuration, random weights from `seed`."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlm_grpo.models.families import family_named
    from vlm_grpo.models.tiny import QWEN_CHAT_TEMPLATE, build_tokenizer
    from vlm_grpo.models.tiny.qwen import qwen2_vl_images, qwen3_vl_images

    tokenizer = build_tokenizer()
    config = checkpoint_config(name, tiny, tokenizer)
    family = FAMILY[config.model_type]
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = [config.text_config.eos_token_id]
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    adapter = family_named(family)
    # The checkpoints' own pixel budget admits a 480 x 320 image at (nearly) native size.
    images = qwen3_vl_images if family.startswith("qwen3") else qwen2_vl_images
    processor = adapter.make_processor(images(1024 * 1024), tokenizer, QWEN_CHAT_TEMPLATE)
    return model, processor, family


def rows(n: int = 16) -> list[dict]:
    from vlm_grpo.lab.scenes import render_scene

    out = []
    for seed in range(n):
        image, scene = render_scene("lab-clevr", seed, size=IMAGE[1])
        out.append({"image": image.resize(IMAGE), "question": scene.question, "answer": str(scene.count)})
    return out


def parameters(model) -> tuple[int, int]:
    """(language-model parameters without the input embedding, vision-tower parameters)."""
    from vlm_grpo.models.loading import VISION_TOWERS

    tower = next((getattr(model.model, n) for n in VISION_TOWERS if hasattr(model.model, n)), None)
    vision = sum(p.numel() for p in tower.parameters()) if tower is not None else 0
    embed = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    # A tied LM head shares the embedding's storage but still costs its matmul: count it back in.
    return total - vision - embed + (embed if tied else 0), vision


def step_flops(lm: int, vision: int, prompt_tokens: float, patches: float, epochs: int) -> float:
    """Nominal FLOPs of one step over 32 rows: sampling (prefill and decode, 2 N per token), the
    rollout-time no-grad pass when there are several epochs (2 N), each epoch's forward and
    backward (6 N); the vision tower runs over every row's patches in each of those passes."""
    rows_ = G * PROMPTS
    tokens = rows_ * (prompt_tokens + NEW_TOKENS)
    passes_2n = 1 + (1 if epochs > 1 else 0)
    return (2 * passes_2n + 6 * epochs) * (lm * tokens + vision * rows_ * patches)


# ------------------------------------------------------------------------------------------ children
def child(a: argparse.Namespace) -> dict:
    import torch

    device = "cpu" if a.cpu_tiny else "cuda"
    model, processor, family = build(a.model, a.cpu_tiny, device)
    data = rows()
    forced = forbid_end_tokens()
    lm, vision = parameters(model)
    encoded = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": data[0]["question"]}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    batch = processor(text=[encoded], images=[data[0]["image"]], return_tensors="pt")
    prompt_tokens, patches = batch["input_ids"].shape[1], int(batch["image_grid_thw"].prod(-1).sum())
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = run_ours if a.framework == "ours" else run_trl
    result = run(a, model, processor, data)
    result |= {
        "model": a.model,
        "family": family,
        "forced_length": forced,
        "prompt_tokens": prompt_tokens,
        "image_patches": patches,
        "lm_parameters": lm,
        "vision_parameters": vision,
        "step_flops": step_flops(lm, vision, prompt_tokens, patches, a.epochs),
        "peak_rss_mb": rss_mb(),
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
    return result


def run_ours(a, model, processor, data) -> dict:
    from vlm_grpo import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(Path(a.workdir) / f"ours-{a.model}"),
        max_steps=a.warmup + a.steps,
        num_generations=G,
        prompts_per_step=PROMPTS,
        num_iterations=a.epochs,
        max_completion_length=NEW_TOKENS,
        micro_batch_size=G * PROMPTS,
        temperature=1.0,
        beta=0.0,
        learning_rate=1e-6,
        precision="fp32" if a.cpu_tiny else "bf16-mixed",
        device="cpu" if a.cpu_tiny else "cuda",
        save_steps=1_000_000,
        log_completions_steps=0,
        report_to=[],
        progress=False,
        rollout_engine=a.engine,
        # The engine's server shares the GPU with the trainer: its share, and a KV cache sized for it.
        vllm={
            "mode": a.vllm_mode,
            "python": a.vllm_python,
            "gpu_memory_utilization": a.vllm_gpu_share,
            "kv_cache_gib": 1,
        },
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=["answer"], args=args, train_dataset=data, processing_class=processor
    )
    trainer.trainer.save = lambda step: None  # no final checkpoint: a 2-4B model and its optimizer state, untimed
    trainer.train()  # its metrics time each phase of each step (time/<phase>_s)
    records = [json.loads(line) for line in (Path(args.output_dir) / "metrics.jsonl").read_text().splitlines()]
    timed_records = records[a.warmup :]
    sample_and_score = ("data", "encode", "sampling", "scoring", "remedies")
    return {
        "framework": "ours",
        "step_s": [r["time/step_s"] for r in timed_records],
        "mean_completion_length": statistics.fmean(r["completion/mean_length"] for r in timed_records),
        "phases_s": {
            "sample_and_score": [sum(r.get(f"time/{p}_s", 0.0) for p in sample_and_score) for r in timed_records],
            "rollout_logprobs": [r["time/rollout_logprobs_s"] for r in timed_records],
            "update": [r["time/update_s"] for r in timed_records],
        },
        "logprob_sharing": trainer.trainer.cfg.logprob_sharing,
        "engine": a.engine if a.engine == "hf" else f"vllm-{a.vllm_mode}",
        "weight_sync_s": [r.get("time/weight_sync_s", 0.0) for r in timed_records],
        "engine_logp_gap_max": [r.get("engine/logp_gap_max") for r in timed_records],  # None with hf
    }


def step_timer():
    """A TrainerCallback timing TRL's optimizer steps (on_step_begin to on_step_end) and keeping the
    completion lengths it logs."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.step_s, self.lengths = 0.0, [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_s.append(time.perf_counter() - self.begin)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(float(logs["completions/mean_length"]))

    return StepTimer()


def run_trl(a, model, processor, data) -> dict:
    import datasets
    import trl

    from vlm_grpo.tasks.rewards import resolve
    from vlm_grpo.tasks.styles import DEFAULT

    dataset = datasets.Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}]
                for r in data
            ],
            "image": [r["image"] for r in data],
            "answer": [int(r["answer"]) for r in data],
        }
    )
    reward = resolve("answer")

    def counting(completions, answer, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [reward(t, int(n), DEFAULT) for t, n in zip(texts, answer)]

    # TRL counts optimizer steps: with num_iterations=4 one rollout feeds 4 of them (its steps_per_generation).
    steps = (a.warmup + a.steps) * a.epochs
    args = trl.GRPOConfig(
        output_dir=str(Path(a.workdir) / f"trl-{a.model}"),
        seed=0,
        per_device_train_batch_size=G * PROMPTS,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=NEW_TOKENS,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=a.epochs,
        learning_rate=1e-6,
        generation_kwargs={"min_new_tokens": NEW_TOKENS},
        max_steps=steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_vllm=False,
        bf16=not a.cpu_tiny,
        use_cpu=a.cpu_tiny,
        dataloader_num_workers=0,
        log_completions=False,
    )
    timer = step_timer()
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=counting,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[timer],
    )
    phases: dict[str, list[float]] = {"generate_and_score": []}
    trainer._generate_and_score_completions = timed(
        phases, "generate_and_score", trainer._generate_and_score_completions
    )
    trainer.train()
    # One of our steps (a rollout and its 4 epochs) = `epochs` of TRL's optimizer steps.
    per_rollout = [sum(timer.step_s[i : i + a.epochs]) for i in range(0, len(timer.step_s), a.epochs)]
    return {
        "framework": "trl",
        "step_s": per_rollout[a.warmup :],
        "mean_completion_length": statistics.fmean(timer.lengths) if timer.lengths else float("nan"),
        "phases_s": {"generate_and_score": phases["generate_and_score"][a.warmup :]},
    }


# ------------------------------------------------------------------------------------------ parent
def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def summarize(result: dict, peak: float | None) -> dict:
    step = statistics.median(result["step_s"])
    out = {
        "step_s": step,
        "completions_per_s": G * PROMPTS / step,
        "phases_s": {k: statistics.median(v) for k, v in result["phases_s"].items() if v},
        "peak_gpu_gb": result["peak_gpu_gb"],
        "peak_rss_mb": result["peak_rss_mb"],
        "mean_completion_length": result["mean_completion_length"],
        "prompt_tokens": result["prompt_tokens"],
    }
    if str(result.get("engine")).startswith("vllm"):  # what the engine adds: the weight push, the engine/trainer gap
        out["weight_sync_s"] = statistics.median(result["weight_sync_s"])
        out["engine_logp_gap_max"] = max(g for g in result["engine_logp_gap_max"] if g is not None)
    out["mfu"] = result["step_flops"] / step / (peak * 1e12) if peak else None
    return out


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated names under benchmarks/configs/")
    p.add_argument("--frameworks", default="ours,trl", help="ours, trl or both")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of every child")
    p.add_argument("--steps", type=int, default=3, help="timed steps per child")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="GRPO epochs per rollout (the study: 4)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak (default: by name)")
    p.add_argument("--cpu-tiny", action="store_true", help="CPU, fp32, each configuration shrunk: a smoke run")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="ours samples through this engine")
    p.add_argument("--vllm-python", default=".venv-vllm/bin/python", help="the vLLM environment's interpreter")
    p.add_argument("--vllm-gpu-share", type=float, default=0.35, help="GPU memory share of the vLLM engine")
    p.add_argument("--vllm-mode", choices=("spawn", "colocate"), default="spawn", help="a server, or in the trainer")
    p.add_argument("--workdir", default=None, help="run folders and child logs (default: a temporary folder)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--framework", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print("RESULT " + json.dumps(child(a)), flush=True)
        return None
    import tempfile

    import torch

    work = Path(a.workdir or tempfile.mkdtemp(prefix="gpu_step_"))
    work.mkdir(parents=True, exist_ok=True)
    device = "cpu" if a.cpu_tiny else torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if device is None:
        p.error("no CUDA device: run on a GPU, or pass --cpu-tiny for the CPU smoke run")
    peak = None if a.cpu_tiny else peak_tflops(device, a.peak_tflops)
    report: dict = {"device": device, "peak_tflops": peak, "setting": vars(a) | {"G": G, "prompts": PROMPTS}}
    report["models"] = {}
    for name in a.models.split(","):
        if not (CONFIGS / name / "config.json").is_file():
            p.error(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
        for framework in a.frameworks.split(","):
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--child", "1", "--model", name, "--framework", framework]
            cmd += [
                "--warmup",
                str(a.warmup),
                "--steps",
                str(a.steps),
                "--epochs",
                str(a.epochs),
                "--workdir",
                str(work),
                "--engine",
                a.engine,
                "--vllm-python",
                a.vllm_python,
                "--vllm-gpu-share",
                str(a.vllm_gpu_share),
                "--vllm-mode",
                a.vllm_mode,
            ]
            cmd += ["--cpu-tiny"] if a.cpu_tiny else []
            log = work / f"{name}-{framework}.log"
            with log.open("w") as handle:
                done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=handle, text=True)
            lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if done.returncode or not lines:
                entry = {"error": f"exit {done.returncode}; see {log}"}
            else:
                entry = summarize(json.loads(lines[-1][len("RESULT ") :]), peak)
            entry["wall_s"] = time.perf_counter() - t0
            report["models"].setdefault(name, {})[framework] = entry
            print(f"{name} {framework}: {json.dumps(entry)}", file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
