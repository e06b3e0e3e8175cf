"""Per-token log-probs through a model's output head, a chunk of positions at a time.

Shapes: K positions (the completion tokens of a pass, padding left out), H hidden size, V vocabulary.

The (K, V) logits never exist at once. Each chunk's logits are projected in the compute dtype, the
suppressed ids (vision placeholders) filled with -inf, taken to float32, divided by the sampling
temperature and normalised by log-sum-exp; the same arithmetic as a full-logits log-softmax, one
chunk at a time. For an `nn.Linear` head (every supported family's, tied or not) the backward pass
recomputes each chunk's logits and accumulates the head's weight gradient into one buffer
(`LinearHeadLogprobs`, the approach of Liger's fused linear cross-entropy and TRL's fused LM head);
any other head (LoRA on the head, a quantized one) runs each chunk under activation checkpointing,
which gives the same values but builds a weight-sized gradient per chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

LOGITS_PER_CHUNK = 2**25
"""Logits computed at once when no chunk size is given: 128 MB in float32, about 220 positions at a
152k vocabulary (a whole lab micro-batch at 560)."""


def token_logprobs(
    hidden: torch.Tensor,  # (K, H) final hidden state at each position that predicts a token
    head: Callable[[torch.Tensor], torch.Tensor],  # (k, H) -> (k, V): the head module or its forward
    tokens: torch.Tensor,  # (K,) the token each position predicts
    temperature: float = 1.0,
    suppressed: torch.Tensor | None = None,  # (S,) vocabulary ids that are never sampled
    chunk_tokens: int = 0,  # positions per chunk; 0: LOGITS_PER_CHUNK logits a chunk
) -> torch.Tensor:  # (K,) float32
    """log pi(token) at the sampling temperature; the memory above the hidden states is one chunk's
    logits (and, with gradients, the head's weight gradient), whatever K is."""
    module = getattr(head, "__self__", head)
    suppressed = suppressed if suppressed is not None else torch.zeros(0, dtype=torch.long)
    suppressed = suppressed.to(hidden.device)
    if type(module) is torch.nn.Linear:
        chunk_tokens = chunk_tokens if chunk_tokens > 0 else max(1, LOGITS_PER_CHUNK // module.out_features)
        dtype = compute_dtype(hidden.device, module.weight.dtype)
        args = (module.weight, module.bias, tokens, temperature, suppressed, chunk_tokens, dtype)
        return LinearHeadLogprobs.apply(hidden, *args)
    return _module_head_logprobs(hidden, head, tokens, temperature, suppressed, chunk_tokens)


def compute_dtype(device: torch.device, weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype a linear layer computes in here: autocast's where it is on, the weight's otherwise."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return weight_dtype


def scaled_logits(
    hidden: torch.Tensor,  # (k, H)
    weight: torch.Tensor,  # (V, H)
    bias: torch.Tensor | None,  # (V,)
    suppressed: torch.Tensor,  # (S,)
    temperature: float,
    dtype: torch.dtype,
) -> torch.Tensor:  # (k, V) float32
    """One chunk's logits in `dtype`, suppressed ids at -inf, then float32 over the temperature."""
    bias = bias.to(dtype) if bias is not None else None
    logits = torch.nn.functional.linear(hidden.to(dtype), weight.to(dtype), bias)
    return logits.index_fill(-1, suppressed, float("-inf")).float() / temperature


class LinearHeadLogprobs(torch.autograd.Function):
    """token_logprobs for a linear head: forward keeps each position's log-sum-exp (K floats), backward
    recomputes a chunk's logits and turns them into the gradient of the picked log-prob,
    (onehot(token) - softmax) x grad / temperature, through the cast to float32 and the -inf fill
    (suppressed ids have softmax 0, so nothing flows to them)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, temperature, suppressed, chunk_tokens, dtype):
        out = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)  # (K,)
        lse = torch.empty_like(out)  # (K,)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.size(0), chunk_tokens):
                part = slice(start, start + chunk_tokens)
                logits = scaled_logits(hidden[part], weight, bias, suppressed, temperature, dtype)
                lse[part] = torch.logsumexp(logits, dim=-1)
                out[part] = logits.gather(-1, tokens[part].unsqueeze(-1)).squeeze(-1) - lse[part]
        ctx.save_for_backward(hidden, weight, bias, tokens, suppressed, lse)
        ctx.temperature, ctx.chunk_tokens, ctx.dtype = temperature, chunk_tokens, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # grad_out (K,)
        hidden, weight, bias, tokens, suppressed, lse = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight) if needs_weight else None
        grad_bias = torch.zeros_like(bias) if needs_bias and bias is not None else None
        dtype, temperature = ctx.dtype, ctx.temperature
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.size(0), ctx.chunk_tokens):
                part = slice(start, start + ctx.chunk_tokens)
                logits = scaled_logits(hidden[part], weight, bias, suppressed, temperature, dtype)
                g = grad_out[part].unsqueeze(-1)  # (k, 1)
                grad = torch.exp(logits - lse[part].unsqueeze(-1)).mul_(-g)  # -softmax x grad
                grad.scatter_add_(-1, tokens[part].unsqueeze(-1), g)  # + onehot(token) x grad
                grad = grad.div_(temperature).to(dtype)  # (k, V) gradient of the dtype logits
                if grad_hidden is not None:
                    grad_hidden[part] = (grad @ weight.to(dtype)).to(hidden.dtype)
                if grad_weight is not None:
                    _accumulate(grad_weight, grad.T, hidden[part].to(dtype))
                if grad_bias is not None:
                    grad_bias += grad.sum(0).to(grad_bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None


def _accumulate(buffer: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """buffer += a @ b, in place when the dtypes agree (no weight-sized temporary)."""
    if a.dtype == buffer.dtype:
        buffer.addmm_(a, b)
    else:
        buffer += (a @ b).to(buffer.dtype)


def _module_head_logprobs(hidden, head, tokens, temperature, suppressed, chunk_tokens) -> torch.Tensor:
    """Any other head, called as it is; several chunks are recomputed in the backward pass."""
    if chunk_tokens <= 0:
        with torch.no_grad():
            vocab = head(hidden[:1]).size(-1) if hidden.size(0) else 1
        chunk_tokens = max(1, LOGITS_PER_CHUNK // vocab)

    def chunk(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (k, H), (k,) -> (k,)
        logits = head(h).index_fill(-1, suppressed, float("-inf")).float() / temperature
        return logits.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    module = getattr(head, "__self__", head)
    trains = hasattr(module, "parameters") and any(p.requires_grad for p in module.parameters())
    several = hidden.size(0) > chunk_tokens
    recompute = several and torch.is_grad_enabled() and (hidden.requires_grad or trains)
    parts = [
        checkpoint(chunk, h, t, use_reentrant=False) if recompute else chunk(h, t)
        for h, t in zip(hidden.split(chunk_tokens), tokens.split(chunk_tokens))
    ]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
