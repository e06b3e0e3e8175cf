"""The sampler's decode loop: the preallocated KV cache, multinomial's draws written out, and
sample_from_prefix against a plain loop that keeps every row to the end."""

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from support import lab_samples
from vlm_grpo.models.compat import cache_of, with_cache
from vlm_grpo.models.families import adapter_for
from vlm_grpo.models.tiny import build_tiny
from vlm_grpo.rollout import encode_prompts
from vlm_grpo.rollout.generation import pick_tokens, sample_from_prefix
from vlm_grpo.rollout.kv_cache import PreallocatedLayer, preallocate
from vlm_grpo.tasks.styles import DEFAULT


def states(batch, length, fill):  # (batch, heads 2, length, dim 3)
    return torch.arange(batch * 2 * length * 3, dtype=torch.float32).reshape(batch, 2, length, 3) + fill


def test_preallocated_layer_holds_what_concatenation_holds():
    dynamic = DynamicLayer()
    dynamic.update(states(2, 4, 0), states(2, 4, 100))
    layer = PreallocatedLayer(states(2, 4, 0), states(2, 4, 100), repeats=1, capacity=7)
    for step in range(3):
        new_keys, new_values = states(2, 1, 1000 + step), states(2, 1, 2000 + step)
        keys, values = layer.update(new_keys, new_values)
        expected_keys, expected_values = dynamic.update(new_keys, new_values)
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
        assert layer.get_seq_length() == dynamic.get_seq_length() == 5 + step
        assert layer.get_mask_sizes(1) == dynamic.get_mask_sizes(1)
    assert layer.key_buffer.data_ptr() == keys.data_ptr()  # a view of the buffer, no copy
    with pytest.raises(RuntimeError, match="KV cache full"):
        layer.update(states(2, 1, 0), states(2, 1, 0))


def test_preallocated_layer_repeats_selects_and_crops_rows():
    layer = PreallocatedLayer(states(3, 2, 0), states(3, 2, 50), repeats=2, capacity=4)
    assert torch.equal(layer.keys, states(3, 2, 0).repeat_interleave(2, dim=0)) and layer.get_max_length() == 4
    buffer = layer.key_buffer.data_ptr()
    layer.batch_select_indices(torch.tensor([5, 0, 3]))  # rows leave: compacted in the same buffer
    assert torch.equal(layer.values, states(3, 2, 50)[[2, 0, 1]]) and layer.key_buffer.data_ptr() == buffer
    layer.update(states(3, 1, 7), states(3, 1, 8))
    layer.reorder_cache(torch.tensor([2, 1, 0]))
    assert torch.equal(layer.keys[:, :, :2], states(3, 2, 0)[[1, 0, 2]])
    assert torch.equal(layer.keys[:, :, 2:], states(3, 1, 7)[[2, 1, 0]])
    layer.crop(-1)
    assert layer.get_seq_length() == 2 and torch.equal(layer.keys, states(3, 2, 0)[[1, 0, 2]])
    layer.crop(-5)
    assert layer.get_seq_length() == 0
    layer.update(states(3, 2, 9), states(3, 2, 9))
    layer.reset()
    assert layer.get_seq_length() == 0 and layer.keys.size(-2) == 0


def test_preallocate_repeats_a_prefilled_cache():
    cache = DynamicCache()
    cache.update(states(2, 3, 0), states(2, 3, 9), layer_idx=0)
    cache.update(states(2, 3, 1), states(2, 3, 8), layer_idx=1)
    preallocate(cache, repeats=3, new_tokens=5)
    assert all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    assert torch.equal(cache.layers[1].keys, states(2, 3, 1).repeat_interleave(3, dim=0))
    assert cache.layers[0].key_buffer.shape == (6, 2, 8, 3) and cache.get_seq_length() == 3


def test_draws_equal_torch_multinomial_and_do_not_depend_on_other_rows():
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]])
    logits = probs.log()
    for seed in range(20):
        torch.manual_seed(seed)
        expected = torch.multinomial(probs, 1).squeeze(1)
        torch.manual_seed(seed)
        assert torch.equal(pick_tokens(logits, 1.0, 1.0, 0), expected)
        torch.manual_seed(seed)  # rows 0 and 3 of the same batch, the others gone
        assert torch.equal(pick_tokens(logits[[0, 3]], 1.0, 1.0, 0, torch.tensor([0, 3]), 4), expected[[0, 3]])
    assert torch.equal(pick_tokens(logits, None, 1.0, 0), torch.tensor([2, 0, 1, 2]))
    with pytest.raises(RuntimeError, match="not finite"):  # as torch.multinomial refuses them
        pick_tokens(torch.tensor([[0.0, float("nan")]]), 1.0, 1.0, 0)


@torch.no_grad()
def every_row_to_the_end(adapter, model, inputs, group, new_tokens, end_ids, pad_id, forbidden):
    """The plain loop: one growing cache, every row decoded to the last step, torch.multinomial."""
    last, cache, start = adapter.prefill(model, inputs)
    cache.batch_repeat_interleave(group)
    logits, start = last[:, -1].repeat_interleave(group, dim=0), start.repeat_interleave(group)
    attention = inputs["attention_mask"].repeat_interleave(group, dim=0)
    finished = torch.zeros(logits.size(0), dtype=torch.bool)
    tokens = []
    for step in range(new_tokens):
        logits[:, forbidden] = float("-inf")
        token = torch.multinomial(logits.float().softmax(-1), 1).squeeze(1)
        tokens.append(torch.where(finished, torch.full_like(token, pad_id), token))
        finished |= torch.isin(token, torch.tensor(end_ids))
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        positions = adapter.positions(start + step, 1)
        out = model(input_ids=token.unsqueeze(1), attention_mask=attention, position_ids=positions, **with_cache(cache))
        cache, logits = cache_of(out), out.logits[:, -1]
    return torch.stack(tokens, dim=1)


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen3-vl"])
def test_sampler_equals_the_plain_loop_while_rows_end(family, monkeypatch):
    model, processor = build_tiny(family)
    adapter = adapter_for(model)
    end_ids = adapter.end_token_ids(processor, model)
    bias = torch.zeros(model.lm_head.out_features)
    bias[end_ids[0]] = 5.0  # the end token likely: rows end at different steps
    model.lm_head.register_forward_hook(lambda module, args, logits: logits + bias)
    model.eval()
    prompts = encode_prompts(processor, DEFAULT, lab_samples(2), torch.device("cpu"))
    pad_id, forbidden = processor.tokenizer.pad_token_id, adapter.vision_token_ids(model)
    args = (adapter, model, prompts.inputs, 4)
    compactions = []
    select = PreallocatedLayer.batch_select_indices
    monkeypatch.setattr(
        PreallocatedLayer, "batch_select_indices", lambda layer, keep: (compactions.append(keep), select(layer, keep))
    )
    torch.manual_seed(3)
    ours = sample_from_prefix(*args, 10, 1.0, 1.0, 0, end_ids, pad_id, forbidden)
    assert compactions  # rows left the batch
    torch.manual_seed(3)
    plain = every_row_to_the_end(*args, 10, end_ids, pad_id, forbidden)
    is_end = torch.isin(plain, torch.tensor(end_ids))
    assert is_end.int().argmax(1)[is_end.any(1)].unique().numel() >= 2  # rows left at different steps
    assert torch.equal(ours, plain[:, : ours.size(1)])
    assert (plain[:, ours.size(1) :] == pad_id).all()  # nothing but padding after the last row ended
