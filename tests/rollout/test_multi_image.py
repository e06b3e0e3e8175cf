"""Several images per prompt: prompts show every image in order, and every log-prob path and
sampling handle them exactly (1, 3 and 2 images in one batch)."""

import json

import pytest
import torch
from PIL import Image

from support import logprobs_and_grads
from vlm_grpo.config import load_config
from vlm_grpo.data import Sample
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
from vlm_grpo.tasks.styles import DEFAULT
from vlm_grpo.training.trainer import Trainer

G = 2
COUNTS = [1, 3, 2]
FAMILIES = ["qwen2-vl", "qwen3-vl"]


def scenes(family):
    torch.manual_seed(0)
    model, processor = build_tiny(family)
    samples, scene_index = [], 0
    for i, count in enumerate(COUNTS):
        images = []
        for _ in range(count):
            images.append(render_scene("lab-clevr", scene_index)[0])
            scene_index += 1
        question = "How many objects are there in all the images?" + " Count carefully." * i
        samples.append(Sample(str(i), images if count > 1 else images[0], question, 3, "lab-clevr"))
    return model, processor, encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))


@pytest.mark.parametrize("family", FAMILIES)
def test_prompts_show_every_image_in_order(family):
    model, processor, prompts = scenes(family)
    assert prompts.image_counts == COUNTS and prompts.inputs["image_grid_thw"].size(0) == sum(COUNTS)
    image_token = model.config.image_token_id
    merge = 4  # spatial_merge_size ** 2 patches per image token
    grid = prompts.inputs["image_grid_thw"]
    per_image = (grid.prod(-1) // merge).tolist()
    for prompt, rows in enumerate([[0], [1, 2, 3], [4, 5]]):
        assert int((prompts.inputs["input_ids"][prompt] == image_token).sum()) == sum(per_image[r] for r in rows)
    # Selecting prompts takes exactly their images: the same as encoding them alone.
    alone = encode_prompts(processor, DEFAULT, [prompts.samples[2], prompts.samples[1]], torch.device("cpu"))
    picked = prompts.select(torch.tensor([2, 1]))
    assert torch.equal(picked["pixel_values"], alone.inputs["pixel_values"])
    assert torch.equal(picked["image_grid_thw"], alone.inputs["image_grid_thw"])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_logprob_path_is_exact_with_several_images(family):
    model, processor, prompts = scenes(family)
    ids, mask, _, _ = generate(model, processor, prompts, G, 8, temperature=1.0)
    mask[1, 3:] = 0  # an early stop
    model.train()
    logps, grads = logprobs_and_grads(model, prompts, ids, mask, G)
    on = mask.bool()
    for sharing in ("prefix", "vision"):
        assert (logps[sharing] - logps["none"])[on].abs().max().item() < 1e-5, sharing
        for name, reference in grads["none"].items():
            scale = reference.abs().max().clamp(min=1e-6)
            assert (grads[sharing][name] - reference).abs().max() / scale < 1e-4, (sharing, name)
    subset = torch.tensor([5, 0, 3])  # rows of the three-image prompt first, out of order
    shared = completion_logprobs(model, prompts, subset, ids[subset], mask[subset], G, 1.0, "prefix")
    assert (shared - logps["none"][subset])[mask[subset].bool()].abs().max().item() < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_sampling_with_several_images_equals_transformers_generate(family):
    model, processor, prompts = scenes(family)
    ours = generate(model, processor, prompts, 1, 10, temperature=None, sharing="prefix")
    theirs = generate(model, processor, prompts, 1, 10, temperature=None, sharing="none")
    width = min(ours[0].size(1), theirs[0].size(1))
    assert torch.equal((ours[0] * ours[1].long())[:, :width], (theirs[0] * theirs[1].long())[:, :width])
    assert ours[3] == theirs[3]


@pytest.mark.slow
def test_rows_with_lists_of_images_train(tmp_path):
    for i in range(4):
        Image.new("RGB", (40 + 8 * i, 40), color=(60 * i, 90, 160)).save(tmp_path / f"{i}.png")
    rows = [
        {"image": [f"{i % 4}.png", f"{(i + 1) % 4}.png", f"{(i + 2) % 4}.png"][: 1 + i % 3], "question": "How many?"}
        | {"answer": 1 + i % 3}
        for i in range(12)
    ]
    (tmp_path / "multi.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = load_config(
        None,
        [
            "model=tiny-qwen2-vl",
            f"data.train={tmp_path / 'multi.jsonl'}",
            "data.eval_holdout=0",
            "num_generations=2",
            "prompts_per_step=3",
            "max_completion_length=8",
            "max_steps=2",
            "save_steps=2",
            "injection.mode=random",
            f"output_dir={tmp_path / 'run'}",
            "progress=false",
            "report_to=[]",
        ],
    )
    trainer = Trainer(cfg)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and lines[-1]["data/skipped"] == 0
