#!/usr/bin/env python
"""Memory per precision setting: measured on the tiny models here, computed for real model sizes.

* measured: each precision trains a few GRPO steps on `tiny-qwen2-vl` and `lab-base-cold` in a
  child process of its own; reported are the peak RSS (`ru_maxrss`) and its rise over the RSS
  after setup (imports, model and optimizer built). These models have under 1 M parameters, so
  weights and Adam state are a few MB and the numbers mostly show that nothing grows unexpectedly.
* computed: weights, gradients, Adam moments and master weights in bytes, from parameter counts of
  Qwen2-VL-2B, Qwen2.5-VL-3B and Qwen3-VL-2B (architectures built on the meta device from their
  published configs, no weights downloaded), on one device and under FSDP full_shard over 8.
  Activations, KV cache and the frozen reference (beta > 0: 4 B/param fp32, 2 B/param bf16) are
  not included.

    python benchmarks/precision_memory.py             # both parts, markdown tables on stdout
    python benchmarks/precision_memory.py --computed  # the computed part only (seconds)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

PRECISIONS = ("fp32", "bf16-mixed", "bf16-true", "fp16-mixed")
GIB = 1024**3

# Bytes per parameter: (weights, gradients, Adam moments, float32 master weights, transient at peak).
# Transient: bf16-mixed/fp16-mixed hold autocast's low-precision weight copies during a forward
# (up to 2 B); bf16-true holds float32 master gradients during the optimizer step (4 B, the bf16
# gradients are freed as they are cast). "bf16 in place" is what dtype=bfloat16 did before.
BYTES = {
    "fp32": (4, 4, 8, 0, 0),
    "bf16-mixed": (4, 4, 8, 0, 2),
    "bf16-true": (2, 2, 8, 4, 4),
    "fp16-mixed": (4, 4, 8, 0, 2),
    "bf16 in place (old dtype=bfloat16, loses updates)": (2, 2, 4, 0, 0),
}

# Published configs (the fields that set parameter counts), from each model's config.json.
CONFIGS = {
    "Qwen2-VL-2B": (
        "qwen2_vl",
        dict(
            text_config=dict(
                hidden_size=1536,
                intermediate_size=8960,
                num_hidden_layers=28,
                num_attention_heads=12,
                num_key_value_heads=2,
                vocab_size=151936,
                tie_word_embeddings=True,
            ),
            vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16),
            tie_word_embeddings=True,
        ),
    ),
    "Qwen2.5-VL-3B": (
        "qwen2_5_vl",
        dict(
            text_config=dict(
                hidden_size=2048,
                intermediate_size=11008,
                num_hidden_layers=36,
                num_attention_heads=16,
                num_key_value_heads=2,
                vocab_size=151936,
                tie_word_embeddings=True,
            ),
            vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048),
            tie_word_embeddings=True,
        ),
    ),
    "Qwen3-VL-2B": (
        "qwen3_vl",
        dict(
            text_config=dict(
                hidden_size=2048,
                intermediate_size=6144,
                num_hidden_layers=28,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                vocab_size=151936,
                tie_word_embeddings=True,
            ),
            vision_config=dict(
                depth=24,
                hidden_size=1024,
                intermediate_size=4096,
                num_heads=16,
                out_hidden_size=2048,
                patch_size=16,
                num_position_embeddings=2304,
                deepstack_visual_indexes=[5, 11, 17],
            ),
            tie_word_embeddings=True,
        ),
    ),
}

CHILD = """
import json, resource, sys, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from vlm_grpo.config import load_config
from vlm_grpo.training.trainer import Trainer
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
trainer = Trainer(load_config(None, sys.argv[1:]))
setup = rss_mb()
trainer.train()
print(json.dumps({"setup_mb": setup, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def count_parameters(model_type: str, config: dict) -> int:
    """Parameters of the architecture built on the meta device (no memory, no download)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.for_model(model_type, **config)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(cfg)
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


def computed_table() -> str:
    lines = [
        "| model | parameters | precision | weights | gradients | Adam moments | fp32 masters | total, 1 device "
        "| at peak, 1 device | per device, FSDP full_shard over 8 |",
        "|---" * 10 + "|",
    ]
    for name, (model_type, config) in CONFIGS.items():
        params = count_parameters(model_type, config)
        for precision, (w, g, adam, master, transient) in BYTES.items():
            total = w + g + adam + master
            sharded = "not supported" if precision == "bf16-true" else f"{params * total / 8 / GIB:.2f} GiB"
            cells = [params * b / GIB for b in (w, g, adam, master, total, total + transient)]
            lines.append(
                f"| {name} | {params / 1e9:.3f} B | {precision} | "
                + " | ".join(f"{c:.2f} GiB" for c in cells)
                + f" | {sharded} |"
            )
    return "\n".join(lines)


def measure(model: str, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        args = [
            f"model={model}",
            f"precision={precision}",
            f"output_dir={out}",
            "max_steps=3",
            "save_steps=1000",
            "num_generations=8",
            "prompts_per_step=4",
            "max_completion_length=32",
            "progress=false",
            "report_to=[]",
            "log_completions_steps=0",
            "injection.mode=random",
        ]
        done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured_table() -> str:
    lines = ["| model | precision | RSS after setup | peak RSS | rise during 3 steps |", "|---|---|---|---|---|"]
    for model in ("tiny-qwen2-vl", "lab-base-cold"):
        for precision in PRECISIONS:
            m = measure(model, precision)
            lines.append(
                f"| {model} | {precision} | {m['setup_mb']:.0f} MB | {m['peak_mb']:.0f} MB "
                f"| {m['peak_mb'] - m['setup_mb']:.0f} MB |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--computed", action="store_true", help="only the computed table")
    args = parser.parse_args()
    print(computed_table())
    if not args.computed:
        print()
        print(measured_table())


if __name__ == "__main__":
    main()
