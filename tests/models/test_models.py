"""Loading models: the tiny families build and generate, deterministic per seed; saved folders load
through the auto classes, folders that are not models are refused clearly, images are fitted once;
the generic adapter for unknown model types, and the support matrix `vlm-grpo models` prints."""

import pytest
import torch

from vlm_grpo.data import Sample
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models import adapter_for_type, load_model_and_processor, registered_models
from vlm_grpo.models.families import GENERIC, family_named
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import encode_prompts, generate
from vlm_grpo.tasks.styles import R1V

CPU = torch.device("cpu")


def one_sample(seed=0):
    image, scene = render_scene("lab-clevr", seed)
    return Sample(f"s{seed}", image, scene.question, scene.count, "lab-clevr")


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_tiny_families_build_and_generate(family):
    model, processor = build_tiny(family)
    prompts = encode_prompts(processor, R1V, [one_sample(0), one_sample(1)], CPU)
    assert prompts.inputs["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]  # 112 px -> 16 merged tokens
    ids, mask, truncated, texts = generate(model, processor, prompts, 3, 6, temperature=1.0)
    assert ids.shape[0] == 6 and len(texts) == 6 and mask.shape == ids.shape


def test_tiny_is_deterministic_per_seed():
    a, _ = build_tiny(seed=3)
    b, _ = build_tiny(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_saved_folder_loads_through_the_auto_classes(tiny_dir):
    model, processor = load_model_and_processor(str(tiny_dir), CPU, torch.float32)
    assert model.config.model_type == "qwen2_vl" and hasattr(processor, "image_processor")
    prompts = encode_prompts(processor, R1V, [one_sample()], CPU)
    greedy = generate(model, processor, prompts, 1, 5, temperature=None)[3]
    assert greedy == generate(model, processor, prompts, 1, 5, temperature=None)[3]


def test_clear_errors_for_folders_that_are_not_models(tmp_path, tiny_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model_and_processor(str(tmp_path), CPU, torch.float32)
    import shutil

    bare = tmp_path / "weights-only"
    shutil.copytree(tiny_dir, bare)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match="weights-only: no processor could be loaded.*processor.save_pretrained"):
        load_model_and_processor(str(bare), CPU, torch.float32)


def test_images_fitted_once_give_the_same_pixels(tmp_path):
    from PIL import Image

    from vlm_grpo.models.families import family_named

    _, processor = build_tiny("qwen2-vl", image_pixels=224 * 224)
    image, _ = render_scene("lab-clevr", 4, size=300)
    image = image.resize((331, 257))  # not a multiple of 28, over the budget
    fitted = family_named("qwen2-vl").fit_image(image, processor)
    assert fitted.size != image.size and fitted.width % 28 == 0 and fitted.height % 28 == 0
    assert family_named("qwen2-vl").fit_image(fitted, processor) is fitted  # already fitted: untouched
    direct = processor.image_processor(images=[image], return_tensors="pt")
    once = processor.image_processor(images=[fitted], return_tensors="pt")
    assert torch.equal(direct["image_grid_thw"], once["image_grid_thw"])
    assert torch.allclose(direct["pixel_values"], once["pixel_values"], atol=1e-5)
    assert isinstance(fitted, Image.Image)


# ------------------------------------------------------------------ family adapters
def test_unknown_model_types_get_the_generic_adapter_which_refuses_prefix_passes():
    assert adapter_for_type("qwen2_vl") is family_named("qwen2-vl")
    assert adapter_for_type("some_new_vlm") is GENERIC and not GENERIC.supports_prefix

    class Config:
        model_type = "some_new_vlm"

    class Model:
        config = Config()

    with pytest.raises(NotImplementedError, match="logprob_sharing=none"):
        GENERIC.prefill(Model(), {})


def test_models_prints_the_support_matrix():
    from typer.testing import CliRunner

    from vlm_grpo.cli import app
    from vlm_grpo.models.families import FAMILIES

    lines = CliRunner().invoke(app, ["models"]).output.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line and line.split()[0] in dict(FAMILIES.items())}
    assert set(rows) == {name for name, _ in FAMILIES.items()}
    for family, adapter in FAMILIES.items():
        # Every family has a tiny real-architecture model (its end-to-end tests train it).
        assert f"tiny-{family}" in registered_models() and rows[family][-1] == f"tiny-{family}"
        assert ("prefix," in rows[family]) == adapter.supports_prefix
    assert any(line.startswith("generic") and line.rstrip().endswith("-") for line in lines)
