"""The throughput benchmark runs end to end at its smallest size and prints its JSON line.

No timing is asserted: this only guards the benchmark against rotting (TRL or project API
changes). The smallest size, the nano model, one timed step per framework, one log-prob repeat.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_throughput.py"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2-vl", "qwen3-vl"])
def test_benchmark_prints_its_json_keys(tmp_path, family):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--sizes",
            "16",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--logprob-repeats",
            "1",
            "--threads",
            "1",
            "--model-size",
            "nano",
            "--no-ours4",
            "--retries",
            "0",
            "--max-wait",
            "0",
            "--workdir",
            str(tmp_path),
            "--family",
            family,
            "--results",
            str(tmp_path / "RESULTS.md"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(final) == {"ratio_vs_trl", "logprob_speedup", "peak_rss_mb"}
    assert set(final["ratio_vs_trl"]) == {"16"} and set(final["logprob_speedup"]) == {"16"}
    assert set(final["peak_rss_mb"]) == {"ours", "trl"}
    for value in (final["ratio_vs_trl"]["16"], final["logprob_speedup"]["16"], *final["peak_rss_mb"].values()):
        assert isinstance(value, (int, float)) and value > 0
    assert "16 image tokens" in (tmp_path / "RESULTS.md").read_text()
