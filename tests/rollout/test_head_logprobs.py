"""Completion log-probs from the final hidden states, the output head applied a chunk at a time,
against the (rows, C, V) logits of the model's own forward, on every tiny family: the same values
and gradients within float rounding, and no forward of the pass ever projects a position."""

import pytest
import torch

from support import lab_samples
from vlm_grpo.models.families import adapter_for
from vlm_grpo.models.tiny import TINY_BUILDERS, build_tiny
from vlm_grpo.rollout import completion_logprobs, encode_prompts
from vlm_grpo.tasks.styles import DEFAULT

FAMILIES = sorted(TINY_BUILDERS.names())
G = 2


def rows_of(family):
    torch.manual_seed(0)
    model, processor = build_tiny(family)
    prompts = encode_prompts(processor, DEFAULT, lab_samples(2), torch.device("cpu"))
    text = processor.tokenizer("There are 3 objects. <answer>3</answer>", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([text[i:] + text[:i] for i in range(2 * G)])  # 4 rows, G per prompt
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a row that ended early
    return model.train(), prompts, ids, mask


def full_logits_logprobs(model, prompts, ids, mask, temperature):
    """The reference: whole rows through the model's forward, every logit, log-softmax over V."""
    inputs = prompts.select(torch.arange(ids.size(0)) // G)
    width = inputs["input_ids"].size(1)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], ids], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], mask.to(inputs["attention_mask"].dtype)], 1)
    if "mm_token_type_ids" in inputs:
        types = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([types, torch.zeros_like(ids, dtype=types.dtype)], 1)
    logits = model(**inputs, use_cache=False).logits[:, width - 1 : -1]
    forbidden = torch.tensor(adapter_for(model).vision_token_ids(model))
    logits = logits.index_fill(-1, forbidden, float("-inf")).float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_state_logprobs_equal_the_full_logits(family):
    model, prompts, ids, mask = rows_of(family)
    rows, on = torch.arange(ids.size(0)), mask.bool()
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
    adapter = adapter_for(model)
    head, projected_positions = adapter.output_head(model), []
    plain_forward = head.forward

    def recording_forward(hidden):  # every projection, the model's own calls and the chunks alike
        logits = plain_forward(hidden)
        projected_positions.append(logits.size(-2))
        return logits

    head.forward = recording_forward

    def loss_and_grads(logp):
        model.zero_grad()
        (logp * weights * mask).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want = full_logits_logprobs(model, prompts, ids, mask, 0.7)
    reference = loss_and_grads(want)
    largest = max(grad.abs().max() for grad in reference.values())
    for sharing in ["none", "prefix"] if adapter.supports_prefix else ["none"]:
        for chunk in (0, 3):
            projected_positions.clear()
            got = completion_logprobs(model, prompts, rows, ids, mask, G, 0.7, sharing, chunk_tokens=chunk)
            assert (got - want)[on].abs().max().item() < 1e-5, (sharing, chunk)
            assert (got[~on] == 0).all()  # positions past a row's end are not projected
            # The forwards handed the head no position; only chunks (of 3 tokens, or all 13) were projected.
            assert 0 in projected_positions and max(projected_positions) <= (3 if chunk else int(on.sum()))
            grads = loss_and_grads(got)
            assert grads.keys() == reference.keys()
            for name, grad in grads.items():  # a gradient that is exactly 0 in theory (k biases) is noise
                bound = 1e-4 * reference[name].abs().max() + 1e-6 * largest
                assert (grad - reference[name]).abs().max() <= bound, (sharing, chunk, name)
    del head.forward


def test_inside_head_replaced_the_forward_returns_what_project_gives():
    model, prompts, ids, mask = rows_of("qwen2-vl")
    adapter = adapter_for(model)
    inputs = prompts.select(torch.tensor([0]))
    seen = []

    def project(hidden, head):
        seen.append(hidden)
        return head(hidden).sum(-1)  # (b, t): any function of the hidden states and the head

    with torch.no_grad():
        logits = model(**inputs).logits
        with adapter.head_replaced(model, project):
            replaced = model(**inputs).logits
    assert len(seen) == 1 and replaced.shape == logits.shape[:2]
    assert torch.allclose(replaced, logits.sum(-1), atol=1e-4)
    # The hooks are gone after the block: the forward projects again.
    assert model(**inputs).logits.shape == logits.shape
