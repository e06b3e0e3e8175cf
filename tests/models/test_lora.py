"""LoRA, frozen vision tower and activation checkpointing on the tiny model."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText

from vlm_grpo.config import ConfigError, load_config
from vlm_grpo.training.trainer import Trainer

pytestmark = pytest.mark.slow

TINY = [
    "model=tiny-qwen2-vl",
    "num_generations=4",
    "prompts_per_step=2",
    "max_completion_length=8",
    "learning_rate=1e-2",
    "progress=false",
    "report_to=[]",
    "injection.mode=random",
    "num_iterations=2",
    "max_steps=2",
    "save_steps=2",
]


def test_lora_changes_only_adapters_and_reference_is_the_base(tmp_path):
    trainer = Trainer(
        load_config(None, TINY + [f"output_dir={tmp_path}", "lora.enabled=true", "lora.r=4", "beta=0.04"])
    )
    assert trainer.policy.reference is None  # no second model in memory
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    base_before = {
        n.replace(".base_layer", ""): p.detach().clone()
        for n, p in trainer.model.get_base_model().named_parameters()
        if "lora_" not in n
    }
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)

    # Reference log-probs with the adapter disabled equal the untouched base model's.
    from vlm_grpo.data import Sample
    from vlm_grpo.lab.scenes import render_scene
    from vlm_grpo.models.tiny import build_tiny
    from vlm_grpo.rollout import completion_logprobs, encode_prompts

    image, scene = render_scene("lab-clevr", 3)
    prompts = encode_prompts(
        trainer.processor, trainer.style, [Sample("a", image, scene.question, 4, "x")], torch.device("cpu")
    )
    ids = torch.tensor([[5, 6, 7, 8]] * 4)
    mask = torch.ones_like(ids, dtype=torch.float)
    with trainer.model.disable_adapter():
        ref = completion_logprobs(trainer.model, prompts, torch.arange(4), ids, mask, 4)
    base, _ = build_tiny("qwen2-vl")
    assert all(torch.equal(p, base_before[n]) for n, p in base.named_parameters())
    assert torch.allclose(ref, completion_logprobs(base, prompts, torch.arange(4), ids, mask, 4), atol=1e-6)
    policy = completion_logprobs(trainer.model, prompts, torch.arange(4), ids, mask, 4)
    assert not torch.allclose(policy, ref)

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "checkpoint-2")  # merged weights load alone
    assert (tmp_path / "checkpoint-2" / "adapter" / "adapter_model.safetensors").is_file()
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in base.parameters())
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["loss/kl"] > 0


def test_lora_resume(tmp_path):
    common = TINY + [f"output_dir={tmp_path}", "lora.enabled=true", "save_steps=1"]
    Trainer(load_config(None, common)).train()
    resumed = Trainer(load_config(None, common[:-1] + ["save_steps=1", "max_steps=3", "resume=true"]))
    resumed.train()
    assert (tmp_path / "checkpoint-3" / "adapter" / "adapter_model.safetensors").is_file()


def test_frozen_vision_tower_and_checkpointing(tmp_path):
    trainer = Trainer(
        load_config(
            None,
            TINY
            + [
                f"output_dir={tmp_path}",
                "freeze_vision_tower=true",
                "gradient_checkpointing=true",
                "logprob_sharing=vision",
            ],
        )
    )
    vision = {n: p.detach().clone() for n, p in trainer.model.model.visual.named_parameters()}
    text = {n: p.detach().clone() for n, p in trainer.model.model.language_model.named_parameters()}
    trainer.train()
    assert all(torch.equal(p, vision[n]) for n, p in trainer.model.model.visual.named_parameters())
    assert any(not torch.equal(p, text[n]) for n, p in trainer.model.model.language_model.named_parameters())


def test_checkpointing_needs_per_row_logprobs():
    with pytest.raises(ConfigError, match="gradient_checkpointing=true .* logprob_sharing=vision"):
        load_config(None, ["gradient_checkpointing=true", "logprob_sharing=prefix"])
    # `auto` picks the fastest pass that works without the KV cache.
    from vlm_grpo.models.families import GENERIC, family_named

    qwen = family_named("qwen2-vl")
    assert [qwen.logprob_sharing("auto", checkpointing) for checkpointing in (False, True)] == ["prefix", "vision"]
    assert GENERIC.logprob_sharing("auto", False) == "none" and qwen.logprob_sharing("none", False) == "none"


def test_qlora_trains_adapters_over_4bit_weights_and_saves_full_precision(tmp_path):
    pytest.importorskip("bitsandbytes")
    from vlm_grpo.data import Sample
    from vlm_grpo.lab.scenes import render_scene
    from vlm_grpo.rollout import completion_logprobs, encode_prompts

    trainer = Trainer(
        load_config(
            None,
            TINY + [f"output_dir={tmp_path}", "lora.enabled=true", "lora.r=4", "lora.load_in_4bit=true", "beta=0.04"],
        )
    )
    q_proj = trainer.model.get_base_model().model.language_model.layers[0].self_attn.q_proj
    assert type(q_proj.base_layer).__name__ == "Linear4bit"
    assert (
        type(trainer.model.get_base_model().model.visual.blocks[0].attn.qkv).__name__ == "Linear"
    )  # vision unquantized
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["loss/kl"] > 0

    # The merged checkpoint is a plain full-precision model computing what the 4-bit policy computes.
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "checkpoint-2")
    assert getattr(merged.config, "quantization_config", None) is None
    assert type(merged.model.language_model.layers[0].self_attn.q_proj).__name__ == "Linear"
    image, scene = render_scene("lab-clevr", 3)
    prompts = encode_prompts(
        trainer.processor, trainer.style, [Sample("a", image, scene.question, 4, "x")], torch.device("cpu")
    )
    ids = torch.tensor([[5, 6, 7, 8]] * 4)
    mask = torch.ones_like(ids, dtype=torch.float)
    policy = completion_logprobs(trainer.model, prompts, torch.arange(4), ids, mask, 4)
    assert torch.allclose(completion_logprobs(merged, prompts, torch.arange(4), ids, mask, 4), policy, atol=1e-4)
