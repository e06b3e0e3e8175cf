"""The throughput benchmark runs end to end at its smallest size and prints its JSON line.

No timing is asserted: this only guards the benchmark against rotting (TRL or project API
changes). The smallest size, the nano model, one timed step per framework, one log-prob repeat.
"""

import json
import sys
from pathlib import Path

import pytest

from support import ROOT, child_env, run_python

pytest.importorskip("trl")

SCRIPT = ROOT / "benchmarks" / "step_throughput.py"


def run_script(script: Path, args: list[str], timeout: int = 180, **env: str):
    """`script` with `args` in a child Python, offline; asserts it succeeded and returns the process
    and the JSON object on its last line."""
    proc = run_python(str(script), *args, env=child_env(**env), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_benchmark_prints_its_json_keys(tmp_path):
    family = "qwen3-vl"  # Qwen2-VL runs in the sweep's test below
    args = ["--sizes", "16", "--repeats", "1", "--warmup", "0", "--steps", "1", "--logprob-repeats", "1"]
    args += ["--threads", "1", "--model-size", "nano"]
    args += ["--no-ours4", "--retries", "0", "--max-wait", "0", "--workdir", str(tmp_path), "--family", family]
    args += ["--results", str(tmp_path / "RESULTS.md")]
    _, final = run_script(SCRIPT, args)
    assert set(final) == {"ratio_vs_trl", "logprob_speedup", "peak_rss_mb"}
    assert set(final["ratio_vs_trl"]) == {"16"} and set(final["logprob_speedup"]) == {"16"}
    assert set(final["peak_rss_mb"]) == {"ours", "trl"}
    for value in (final["ratio_vs_trl"]["16"], final["logprob_speedup"]["16"], *final["peak_rss_mb"].values()):
        assert isinstance(value, (int, float)) and value > 0
    assert "16 image tokens" in (tmp_path / "RESULTS.md").read_text()


SWEEP = SCRIPT.parent / "step_sweep.py"


@pytest.mark.slow
def test_sweep_runs_one_point_of_both_frameworks(tmp_path):
    """The G / length sweep at one small point (G 4 x 8 new tokens, Qwen2-VL nano): both frameworks
    run every completion to its length, the phase table is printed, the results block is written."""
    args = ["--quick", "--points", "4:8", "--size", "16", "--model-size", "nano", "--threads", "1"]
    results = tmp_path / "RESULTS.md"
    proc, final = run_script(SWEEP, [*args, "--workdir", str(tmp_path), "--results", str(results)])
    assert set(final) == {"G=4,L=8"} and final["G=4,L=8"] > 0
    assert "| sampling | " in proc.stdout and "| update (forward, backward, optimizer) | " in proc.stdout
    row = next(line for line in results.read_text().splitlines() if line.startswith("| 4 | 8 | 16 |"))
    assert "x**" in row
    report = json.loads((tmp_path / "report.json").read_text())
    for framework in ("ours", "trl"):
        assert report["sizes"]["16"][framework]["mean_completion_length"] == 8.0


GPU_SCRIPT = ROOT / "benchmarks" / "gpu_step.py"


@pytest.mark.slow
def test_gpu_benchmark_cpu_mode_runs_both_frameworks(tmp_path):
    args = ["--cpu-tiny", "--models", "qwen3-vl-2b-instruct", "--warmup", "0", "--steps", "1", "--epochs", "2"]
    args += ["--workdir", str(tmp_path), "--out", str(tmp_path / "r.json")]
    _, report = run_script(GPU_SCRIPT, args, timeout=300, OMP_NUM_THREADS="1")
    assert report == json.loads((tmp_path / "r.json").read_text()) and report["device"] == "cpu"
    runs = report["models"]["qwen3-vl-2b-instruct"]
    assert set(runs) == {"ours", "trl"}
    for run in runs.values():
        assert "error" not in run, run
        assert run["step_s"] > 0 and run["completions_per_s"] > 0 and run["mean_completion_length"] == 50
        assert run["prompt_tokens"] > 150  # a 480 x 320 image: about 150 image tokens and the question
    assert set(runs["ours"]["phases_s"]) == {"sample_and_score", "rollout_logprobs", "update"}


@pytest.mark.parametrize("name", ["qwen2-vl-2b-instruct", "qwen2.5-vl-3b-instruct", "qwen3-vl-2b-instruct"])
def test_gpu_benchmark_configs_are_the_checkpoints(name):
    """The kept configurations build at full size (on the meta device: no memory) with the
    checkpoints' parameter counts (Qwen2-VL-2B 2.21 B and Qwen2.5-VL-3B 3.75 B as their model pages
    give them; Qwen3-VL-2B, "2B" on its page, 2.13 B), and shrunk they run a forward pass on a
    CLEVR-sized image."""
    import torch

    sys.path.insert(0, str(GPU_SCRIPT.parent))
    import gpu_step

    full = {"qwen2-vl-2b-instruct": 2.21e9, "qwen2.5-vl-3b-instruct": 3.75e9, "qwen3-vl-2b-instruct": 2.13e9}
    model, processor, family = gpu_step.build(name, tiny=False, device="meta")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / full[name] - 1) < 0.02, count
    model, processor, family = gpu_step.build(name, tiny=True, device="cpu")
    row = gpu_step.rows(1)[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[row["image"]], return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()


def test_decode_floor_measures_every_size_and_row_count(tmp_path):
    results = tmp_path / "RESULTS.md"
    args = ["--sizes", "16", "--rows", "1,8", "--repeats", "1", "--threads", "1", "--results", str(results)]
    _, final = run_script(SCRIPT.parent / "decode_floor.py", args)
    assert set(final) == {"16"} and set(final["16"]) == {"1", "8"}
    assert all(isinstance(value, float) for value in final["16"].values())
    text = results.read_text()
    assert "<!-- BEGIN GENERATED: benchmarks/decode_floor.py -->" in text and "| 16 | " in text


REAL_SHAPES = SCRIPT.parent / "real_shapes.py"


@pytest.mark.slow
def test_real_shapes_runs_a_step_and_an_update_of_both_frameworks(tmp_path):
    """Two tiny cases (gpu_step's shrunk Qwen2-VL widths and vocabulary, 16 image tokens): 4 completion
    tokens as a whole step, 8 as an update, each on both sides. The JSON line has the promised shape,
    numbers on both sides, completions of exactly C tokens, and a growth fit per framework. A third case
    shows a video of 4 frames of 16 tokens instead (32 video tokens): ours runs it, TRL's side is not run."""
    args = ["--tiny", "--cases", "16:4,16:8,16:4:4", "--step-max-tokens", "4", "--threads", "1"]
    args += ["--case-timeout", "120", "--workdir", str(tmp_path), "--out", str(tmp_path / "r.json")]
    proc, report = run_script(REAL_SHAPES, args)
    assert report == json.loads((tmp_path / "r.json").read_text())
    *cases, video = report["cases"]
    assert [(c["image_tokens"], c["completion_tokens"], c["unit"]) for c in cases] == [
        (16, 4, "step"),
        (16, 8, "update"),
    ]
    assert "video_frames" not in cases[0] and video["video_frames"] == 4 and video["completion_tokens"] == 4
    assert video["status"] == {"ours": "ok", "trl": "not run"} and "takes no video" in video["not_run"]["trl"]
    assert video["video_tokens"] == video["video_tokens_actual"] == 32 and video["peak_mb"]["trl"] is None
    assert video["peak_mb"]["ours"] > 0 and video["mean_completion_length"]["ours"] == 4.0
    assert "| video 4 frames x 16/2 = 32 (" in proc.stdout
    for case in cases:
        assert case["model"] == "qwen2-vl-2b-instruct" and case["status"] == {"ours": "ok", "trl": "ok"}, case
        for key in ("peak_mb", "s"):
            assert set(case[key]) == {"ours", "trl"}
            assert all(isinstance(v, float) and v > 0 for v in case[key].values()), case[key]
        length = float(case["completion_tokens"])
        assert case["mean_completion_length"] == {"ours": length, "trl": length}
        assert case["image_tokens_actual"] == 16
    assert sorted(g["framework"] for g in report["growth"]) == ["ours", "trl"]
    assert "| qwen2-vl-2b-instruct | 16 (" in proc.stdout and "exponent" in proc.stdout


def test_real_shapes_growth_fit_and_failed_sides():
    """The growth fit recovers a known power law and slope; a side that ran out of memory is a
    null in the JSON and its status in the table, not a crash."""
    sys.path.insert(0, str(REAL_SHAPES.parent))
    import real_shapes

    def case(c, ours, trl, status="ok"):
        return {
            "model": "m",
            "image_tokens": 256,
            "completion_tokens": c,
            "unit": "update",
            "peak_mb": {"ours": ours, "trl": trl},
            "setup_mb": {"ours": 100.0, "trl": 100.0},
            "s": {"ours": 1.0, "trl": None if trl is None else 2.0},
            "status": {"ours": "ok", "trl": status},
            "prompt_tokens": 291,
        }

    cases = [case(c, 100.0 + 2.0 * c, 5.0 * c**0.5) for c in (256, 1024, 4096)]
    fits = {g["framework"]: g for g in real_shapes.growth(cases)}
    assert abs(fits["ours"]["mb_per_1k_tokens"] - 2000.0) < 1e-6
    assert abs(fits["trl"]["exponent"] - 0.5) < 1e-9 and fits["trl"]["completion_tokens"] == [256, 1024, 4096]
    failed = case(4096, 900.0, None, status="oom")
    assert [g["framework"] for g in real_shapes.growth([failed])] == []
    assert "**oom**" in "\n".join(real_shapes.case_table([failed]))
    assert real_shapes.is_oom("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 4")
