"""The shared-prefix log-prob path against the per-row path: same values, same gradients."""

import pytest
import torch

from vlm_grpo.data import Sample
from vlm_grpo.lab.scenes import render_scene
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import completion_logprobs, encode_prompts, generate
from vlm_grpo.tasks.styles import DEFAULT

G = 4


def prompt_batch(family):
    torch.manual_seed(0)
    model, processor = build_tiny(family)
    samples = []
    for i in range(3):
        image, scene = render_scene("lab-clevr", i)
        # Questions of different lengths: the shorter prompts are left-padded.
        samples.append(Sample(str(i), image, scene.question + " Count carefully." * i, scene.count, "lab-clevr"))
    return model, processor, encode_prompts(processor, DEFAULT, samples, torch.device("cpu"))


def batch(family):
    model, processor, prompts = prompt_batch(family)
    ids, mask, _, _ = generate(model, processor, prompts, G, 10, temperature=1.0)
    mask[1, 4:] = 0  # early-stopped completions
    mask[6, 2:] = 0
    return model.train(), prompts, ids, mask


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe"])
def test_prefix_logprobs_equal_per_row(family):
    model, prompts, ids, mask = batch(family)
    assert (prompts.inputs["attention_mask"] == 0).any()  # left padding is exercised
    rows = torch.arange(ids.size(0))
    per_row = completion_logprobs(model, prompts, rows, ids, mask, G, 1.0, "none")
    on = mask.bool()
    for sharing in ("prefix", "vision"):
        shared = completion_logprobs(model, prompts, rows, ids, mask, G, 1.0, sharing)
        assert (shared - per_row)[on].abs().max().item() < 1e-5, sharing
    subset = torch.tensor([2, 5, 9, 10])  # rows from several prompts, out of group order
    shared_subset = completion_logprobs(model, prompts, subset, ids[subset], mask[subset], G, 0.7, "prefix")
    per_row_subset = completion_logprobs(model, prompts, subset, ids[subset], mask[subset], G, 0.7, "none")
    assert (shared_subset - per_row_subset)[mask[subset].bool()].abs().max().item() < 1e-5


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe"])
def test_prefix_gradients_equal_per_row(family):
    model, prompts, ids, mask = batch(family)
    rows = torch.arange(ids.size(0))
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    grads = {}
    for sharing in ("none", "prefix", "vision"):
        model.zero_grad()
        logp = completion_logprobs(model, prompts, rows, ids, mask, G, 1.0, sharing)
        (logp * weights * mask).sum().backward()
        grads[sharing] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for sharing in ("prefix", "vision"):
        assert grads["none"].keys() == grads[sharing].keys()
        for name, reference in grads["none"].items():
            scale = reference.abs().max().clamp(min=1e-6)
            assert (grads[sharing][name] - reference).abs().max() / scale < 1e-4, (sharing, name)


def test_unknown_family_fails_loudly():
    model, prompts, ids, mask = batch("qwen2-vl")
    model.config.model_type = "llava"
    with pytest.raises(NotImplementedError, match="logprob_sharing=none"):
        completion_logprobs(model, prompts, torch.arange(2), ids[:2], mask[:2], G, 1.0, "prefix")


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe"])
def test_prefix_generation_greedy_equals_transformers_generate(family):
    model, processor, prompts = prompt_batch(family)
    ours = generate(model, processor, prompts, 1, 12, temperature=None, sharing="prefix")
    theirs = generate(model, processor, prompts, 1, 12, temperature=None, sharing="none")
    width = min(ours[0].size(1), theirs[0].size(1))
    assert torch.equal(ours[1][:, :width], theirs[1][:, :width])
    assert torch.equal((ours[0] * ours[1].long())[:, :width], (theirs[0] * theirs[1].long())[:, :width])
    assert ours[3] == theirs[3] and torch.equal(ours[2], theirs[2])


def test_sampling_warpers_match_transformers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from vlm_grpo.rollout import pick_tokens

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    warped = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(10)(None, TemperatureLogitsWarper(0.7)(None, logits.clone())))
    allowed = torch.isfinite(warped)
    counts = torch.zeros_like(logits)
    torch.manual_seed(1)
    for _ in range(400):
        counts[torch.arange(4), pick_tokens(logits, 0.7, 0.8, 10)] += 1
    assert not (counts[~allowed] > 0).any()  # never outside transformers' support
    expected = warped.softmax(-1) * 400
    assert (counts - expected).abs().max() < 60  # and close to its distribution
    # Sampling at top_k=1 is greedy.
    assert torch.equal(pick_tokens(logits, 1.0, 1.0, 1), logits.argmax(-1))
