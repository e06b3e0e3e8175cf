"""The shared-prefix log-prob path against the per-row path: same values, same gradients."""

import pytest
import torch

from vlm_grpo.data import Sample
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.prompts import DEFAULT
from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
from vlm_grpo.tiny import build_tiny

G = 4


def batch(family):
    torch.manual_seed(0)
    model, processor = build_tiny(family)
    samples = []
    for i in range(3):
        image, scene = render_scene("lab-clevr", i)
        # Questions of different lengths: the shorter prompts are left-padded.
        samples.append(Sample(str(i), image, scene.question + " Count carefully." * i, scene.count, "lab-clevr"))
    prompts = encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))
    ids, mask, _, _ = generate(model, processor, prompts, G, 10, temperature=1.0)
    mask[1, 4:] = 0  # early-stopped completions
    mask[6, 2:] = 0
    return model.train(), prompts, ids, mask


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_prefix_logprobs_equal_per_row(family):
    model, prompts, ids, mask = batch(family)
    assert (prompts.inputs["attention_mask"] == 0).any()  # left padding is exercised
    rows = torch.arange(ids.size(0))
    per_row = completion_logprobs(model, prompts, rows, ids, mask, G, 1.0, "none")
    shared = completion_logprobs(model, prompts, rows, ids, mask, G, 1.0, "prefix")
    on = mask.bool()
    assert (shared - per_row)[on].abs().max().item() < 1e-5
    subset = torch.tensor([2, 5, 9, 10])  # rows from several prompts, out of group order
    shared_subset = completion_logprobs(model, prompts, subset, ids[subset], mask[subset], G, 0.7, "prefix")
    per_row_subset = completion_logprobs(model, prompts, subset, ids[subset], mask[subset], G, 0.7, "none")
    assert (shared_subset - per_row_subset)[mask[subset].bool()].abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl"])
def test_prefix_gradients_equal_per_row(family):
    model, prompts, ids, mask = batch(family)
    rows = torch.arange(ids.size(0))
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    grads = {}
    for sharing in ("none", "prefix"):
        model.zero_grad()
        logp = completion_logprobs(model, prompts, rows, ids, mask, G, 1.0, sharing)
        (logp * weights * mask).sum().backward()
        grads[sharing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["none"].keys() == grads["prefix"].keys()
    for name, reference in grads["none"].items():
        scale = reference.abs().max().clamp(min=1e-6)
        assert (grads["prefix"][name] - reference).abs().max() / scale < 1e-4, name


def test_unknown_family_fails_loudly():
    model, prompts, ids, mask = batch("qwen2-vl")
    model.config.model_type = "llava"
    with pytest.raises(NotImplementedError, match="logprob_sharing=none"):
        completion_logprobs(model, prompts, torch.arange(2), ids[:2], mask[:2], G, 1.0, "prefix")
