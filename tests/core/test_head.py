"""Log-probs through the output head a chunk at a time (core/head.py), on small literal tensors:
against a full log-softmax by hand and by autograd, for the linear head's own backward pass and for
any other head module, with and without chunks, suppressed ids, bias and bfloat16 autocast."""

import math

import pytest
import torch

from vlm_grpo.core.head import token_logprobs


def test_values_by_hand():
    # Two positions, hidden size 2, a vocabulary of 3: the head is a literal (3, 2) matrix.
    head = torch.nn.Linear(2, 3, bias=False)
    head.weight.data = torch.tensor([[1.0, 2.0], [2.0, 0.0], [0.5, 1.0]])
    hidden, tokens = torch.tensor([[1.0, 0.0], [0.5, -1.0]]), torch.tensor([1, 2])
    logits = torch.tensor([[1.0, 2.0, 0.5], [-1.5, 1.0, -0.75]])
    expected = torch.log_softmax(logits / 0.5, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    for chunk in (0, 1, 2, 5):
        for call in (head, head.forward, lambda h: head(h)):  # the fast path, and any callable
            assert torch.allclose(token_logprobs(hidden, call, tokens, 0.5, chunk_tokens=chunk), expected)


def test_suppressed_ids_leave_the_distribution():
    head = torch.nn.Linear(2, 3, bias=False)
    head.weight.data = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # logits [1, 1, 0]
    got = token_logprobs(torch.tensor([[1.0, 0.0]]), head, torch.tensor([0]), 1.0, torch.tensor([2]))
    assert got.item() == pytest.approx(math.log(0.5))  # id 2 suppressed: two equal logits left


def reference(hidden, head, tokens, temperature, suppressed):
    """The whole (K, V) logits at once, plain autograd."""
    logits = head(hidden).index_fill(-1, suppressed, float("-inf")).float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)


def grads(fn, hidden0, head0, tokens, coeff):
    hidden = hidden0.clone().requires_grad_()
    head = torch.nn.Linear(head0.in_features, head0.out_features)
    head.load_state_dict(head0.state_dict())
    logp = fn(hidden, head)
    (logp * coeff).sum().backward()
    return [logp.detach(), hidden.grad, head.weight.grad, head.bias.grad]


@pytest.mark.parametrize("chunk", [1, 3, 7, 0])
def test_gradients_equal_the_full_logits_on_both_paths(chunk):
    torch.manual_seed(0)
    hidden, head = torch.randn(7, 4), torch.nn.Linear(4, 11)
    tokens, coeff, suppressed = torch.randint(0, 9, (7,)), torch.randn(7), torch.tensor([9, 10])
    want = grads(lambda h, m: reference(h, m, tokens, 0.7, suppressed), hidden, head, tokens, coeff)
    fast = grads(lambda h, m: token_logprobs(h, m, tokens, 0.7, suppressed, chunk), hidden, head, tokens, coeff)
    # A callable that is not the module itself takes the generic path (checkpointed chunks).
    generic = grads(
        lambda h, m: token_logprobs(h, lambda x: m(x), tokens, 0.7, suppressed, chunk), hidden, head, tokens, coeff
    )
    for got in (fast, generic):
        for g, w in zip(got, want):
            assert torch.allclose(g, w, atol=1e-6)


def test_bfloat16_autocast_matches_the_module_under_autocast():
    torch.manual_seed(1)
    hidden, head = torch.randn(6, 8), torch.nn.Linear(8, 13)
    tokens, coeff, suppressed = torch.randint(5, 13, (6,)), torch.randn(6), torch.tensor([4])

    def under_autocast(fn):
        def run(h, m):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(h, m)

        return run

    want = grads(under_autocast(lambda h, m: reference(h, m, tokens, 1.0, suppressed)), hidden, head, tokens, coeff)
    got = grads(
        under_autocast(lambda h, m: token_logprobs(h, m, tokens, 1.0, suppressed, 2)), hidden, head, tokens, coeff
    )
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert torch.allclose(g, w, atol=2e-2, rtol=2e-2)  # bfloat16 rounding of the same products


def test_no_gradient_pass_keeps_nothing_and_an_empty_pass_is_empty():
    head = torch.nn.Linear(4, 5)
    with torch.no_grad():
        out = token_logprobs(torch.randn(3, 4), head, torch.tensor([0, 1, 2]), 1.0, chunk_tokens=2)
    assert out.shape == (3,) and out.grad_fn is None
    assert token_logprobs(torch.zeros(0, 4), head, torch.zeros(0, dtype=torch.long)).shape == (0,)
