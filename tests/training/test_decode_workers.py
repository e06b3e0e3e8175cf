"""`data.num_workers`: a run whose prompts are decoded ahead on worker threads trains exactly as one
that decodes them when drawn (the same metrics, bit-identical checkpoint weights), on rendered images and
on a folder of videos, and a step's wait for decoding shows as `time/decode_s`."""

import json

import datasets
import pytest
import torch
from safetensors.torch import load_file

from support import SMOKE, write_video
from vlm_grpo.config import load_config
from vlm_grpo.training.trainer import Trainer

TIMED = ("time/", "throughput/")  # wall-clock readings: the only metrics that may differ between runs


def video_folder(root):
    """Four clips of different lengths in a folder with `metadata.csv`, written by `datasets`."""
    (root / "clips").mkdir(parents=True)
    rows = []
    for i in range(4):
        write_video(root / "clips" / f"{i}.mp4", frames=4 + 2 * i, size=(56 + 8 * i, 40))
        rows.append({"file_name": f"clips/{i}.mp4", "question": "How many colours?", "answer": 1 + i % 3})
    datasets.Dataset.from_list(rows).to_csv(str(root / "metadata.csv"), index=False)
    return root


def run(tmp_path, name, data, workers):
    out = tmp_path / name
    overrides = [
        "model=tiny-qwen2-vl",
        *data,
        f"data.num_workers={workers}",
        "data.eval_holdout=0",
        "max_steps=3",
        "save_steps=3",
        "prompts_per_step=2",
        "num_generations=2",
        "max_completion_length=8",
        "video.max_pixels=3136",
        "video.max_frames=4",
        f"output_dir={out}",
        "progress=false",
        "report_to=[]",
    ]
    Trainer(load_config(SMOKE, overrides)).train()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return lines, load_file(str(out / "checkpoint-3" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("data", ["images", "videos"])
def test_decoding_workers_change_no_result(tmp_path, data):
    given = ["data.train=lab-clevr"] if data == "images" else [f"data.train={video_folder(tmp_path / 'set')}"]
    plain, plain_weights = run(tmp_path, "plain", given, 0)
    ahead, ahead_weights = run(tmp_path, "ahead", given, 2)
    assert [line["step"] for line in ahead] == [1, 2, 3]
    for before, after in zip(plain, ahead):
        kept = {k: v for k, v in before.items() if not k.startswith(TIMED)}
        assert kept == {k: v for k, v in after.items() if not k.startswith(TIMED)}
        assert "time/decode_s" in before and "time/decode_s" in after
    assert plain_weights.keys() == ahead_weights.keys()
    assert all(torch.equal(plain_weights[name], ahead_weights[name]) for name in plain_weights)
    assert ahead[-1]["data/skipped"] == 0
