"""Every checkpoint folder holds a model card (README.md) that says what the model is and how to train
it again; push_to_hub uploads the final checkpoint, and without a network the run still ends with
one clear line and the checkpoint on disk."""

import yaml
from datasets import Dataset
from PIL import Image

from vlm_grpo import GRPOConfig, GRPOTrainer
from vlm_grpo.config import load_config
from vlm_grpo.training.model_card import model_card
from vlm_grpo.training.trainer import Trainer as CliTrainer

TINY = [
    "model=tiny-qwen2-vl",
    "num_generations=2",
    "prompts_per_step=2",
    "num_iterations=1",
    "max_completion_length=6",
    "progress=false",
]


def front_matter(card: str) -> dict:
    _, front, _ = card.split("---\n", 2)
    return yaml.safe_load(front)


def test_every_checkpoint_of_a_cli_run_has_a_model_card(tmp_path):
    cfg = load_config(
        None,
        TINY
        + [
            f"output_dir={tmp_path}",
            "max_steps=2",
            "save_steps=1",
            "prompt.style=r1v",
            "reward_funcs=[answer, format]",
            "reward_weights=[1.0, 0.5]",
            "injection.mode=random",
            "sft.coef=0.1",
            "data.eval=[lab-clevr]",
            "data.eval_size=2",
            "data.eval_steps=1",
        ],
    )
    CliTrainer(cfg).train()
    for step in (1, 2):
        folder = tmp_path / f"checkpoint-{step}"
        card = (folder / "README.md").read_text()
        assert front_matter(card)["library_name"] == "transformers"
        assert "| base model | `tiny-qwen2-vl` |" in card
        assert "| task | `counting` |" in card
        assert "| prompt style | `r1v` |" in card
        assert "| reward functions | `answer` x 1, `format` x 0.5 |" in card
        assert "| guidance injection | mode=random, rate=constant 1, rows=None, payload=full" in card
        assert "| supervised signal | warmup_steps=0, coef=constant 0.1, gate=none |" in card
        assert f"| steps | {step} of 2 |" in card
        assert "| eval/lab-clevr/accuracy |" in card  # the newest held-out results
        assert "vlm-grpo train config.yaml" in card
        yaml_block = card.split("```yaml\n", 1)[1].split("```", 1)[0]
        assert yaml.safe_load(yaml_block) == yaml.safe_load((folder / "config.yaml").read_text())


def test_a_card_names_a_hub_base_model_and_says_when_nothing_was_evaluated():
    cfg = load_config(None, ["model=Qwen/Qwen2-VL-2B-Instruct"])
    card = model_card(cfg, 5, "model: Qwen/Qwen2-VL-2B-Instruct\n", {}, None)
    assert front_matter(card)["base_model"] == "Qwen/Qwen2-VL-2B-Instruct"
    assert "No held-out set was evaluated" in card
    assert "| guidance injection | off |" in card and "| supervised signal | off |" in card


def test_push_to_hub_offline_ends_with_one_line_and_keeps_the_checkpoint(tmp_path, capsys):
    table = {
        "image": [Image.new("RGB", (28, 28), (40 * i, 90, 160)) for i in range(4)],
        "question": ["How many shapes are there?"] * 4,
        "answer": ["1"] * 4,
    }

    def brief(completions, answer, **kwargs):
        return [1.0 if len(c) < 40 else 0.0 for c in completions]

    args = GRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        push_to_hub=True,
        hub_model_id="someone/tiny-grpo",
        num_generations=2,
        prompts_per_step=2,
        num_iterations=1,
        max_completion_length=6,
        progress=False,
    )
    summary = GRPOTrainer("tiny-qwen2-vl", [brief], args=args, train_dataset=Dataset.from_dict(table)).train()

    assert summary["steps"] == 1
    folder = tmp_path / "checkpoint-1"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("push_to_hub")]
    assert lines == [lines[0]] and "could not reach the hub" in lines[0] and str(folder) in lines[0]
    for name in ("model.safetensors", "trainer_state.pt", "config.yaml", "README.md"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert "Trained from Python" in card and "reward_funcs=[brief]" in card and "train_dataset=..." in card


def test_a_card_of_a_run_set_for_video_says_how_it_saw_videos():
    plain = model_card(load_config(None, []), 5, "", {}, None)
    assert "video" not in plain and "video" not in front_matter(plain)["tags"]
    card = model_card(load_config(None, ["video.fps=1", "video.max_frames=8"]), 5, "", {}, None)
    assert "| video frames | fps=1.0, max_frames=8 (others: the processor's) |" in card
    assert "video" in front_matter(card)["tags"]
    reference = model_card(load_config(None, ["video.positions=reference"]), 5, "", {}, None)
    assert "| video frames | positions=reference (others: the processor's) |" in reference
