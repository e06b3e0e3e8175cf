"""Training on video rows: a jsonl of video paths (and a video beside an image) trains two steps with
injected demonstrations and checkpoints; a family without video support stops at start in one line."""

import json
import math

import pytest
from PIL import Image

from support import write_video
from vlm_grpo.config import load_config
from vlm_grpo.errors import ConfigError
from vlm_grpo.training.trainer import Trainer


def video_rows(tmp_path):
    for i in range(3):
        write_video(tmp_path / f"clip{i}.mp4", frames=4 + 2 * i, fps=4, size=(56 + 8 * i, 40))
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "still.png")
    rows = [{"video": f"clip{i % 3}.mp4", "question": "How many colours?", "answer": 1 + i % 3} for i in range(6)]
    rows[1]["image"] = "still.png"  # a video beside an image
    (tmp_path / "videos.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "videos.jsonl"


def overrides(tmp_path, model: str) -> list[str]:
    return [
        f"model={model}",
        f"data.train={video_rows(tmp_path)}",
        "data.eval_holdout=0",
        "num_generations=2",
        "prompts_per_step=3",
        "max_completion_length=8",
        "max_steps=2",
        "save_steps=2",
        "injection.mode=random",
        "video.max_pixels=3136",  # 56 x 56 per frame: 4 vision tokens per frame pair
        "video.max_frames=4",
        f"output_dir={tmp_path / 'run'}",
        "progress=false",
        "report_to=[]",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "family, positions", [("qwen2-vl", "transformers"), ("qwen3-vl", "transformers"), ("qwen2.5-vl", "reference")]
)
def test_video_rows_train_with_demonstrations_and_checkpoint(tmp_path, family, positions):
    """Video rows train; with video.positions=reference (and a KL term) the policy and the reference model
    copied from it both place the text after a video as the Qwen reference does."""
    extra = [f"video.positions={positions}", "beta=0.04"] if positions == "reference" else []
    trainer = Trainer(load_config(None, [*overrides(tmp_path, f"tiny-{family}"), *extra]))
    models = [trainer.policy.model, trainer.policy.reference] if extra else [trainer.policy.model]
    follows = [getattr(model.model.get_rope_index, "follows_reference", False) for model in models]
    assert follows == [positions == "reference"] * len(models)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and lines[-1]["data/skipped"] == 0
    assert sum(line["injection/groups_injected"] for line in lines) > 0  # demonstrations on video rows
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "processor_config.json").is_file()


@pytest.mark.slow
def test_video_rows_take_the_supervised_remedies(tmp_path):
    """A supervised warm-up step on video demonstrations, then CHORD's supervised term beside GRPO."""
    extra = ["sft.warmup_steps=1", "sft.coef=0.2", "injection.mode=none"]
    trainer = Trainer(load_config(None, [*overrides(tmp_path, "tiny-qwen2-vl"), *extra]))
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and lines[-1]["data/skipped"] == 0
    sft = [key for key in lines[-1] if key.startswith("sft/")]
    assert sft and all(math.isfinite(lines[-1][key]) for key in sft if isinstance(lines[-1][key], float)), sft


def test_a_family_without_video_stops_at_start(tmp_path):
    with pytest.raises(ConfigError, match=r"videos.jsonl has a video column 'video': the gemma3 family cannot take"):
        Trainer(load_config(None, overrides(tmp_path, "tiny-gemma3")))
