"""A KV cache for the sampler: one buffer per layer sized for the whole run, written in place.

transformers' `DynamicLayer` concatenates each new token's keys and values onto the whole cache, so
a decode step copies every cached state (O(length) per token, O(length^2) per completion; at 256
image tokens this was a quarter of the sampler's time on CPU). `PreallocatedLayer` writes the new
token into a buffer sized for prompt + max_new_tokens and hands attention a view of the filled part:
the same keys and values, one token's copy per step. Rows that ended leave the batch through
`batch_select_indices`, as with the dynamic cache.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):  # keys (b, heads, n, d)
        super().__init__()
        self.device, self.length, self.is_initialized = keys.device, keys.size(-2), True
        self.key_buffer = self._buffer(keys, capacity)
        self.value_buffer = self._buffer(values, capacity)
        self._views()

    @staticmethod
    def _buffer(states: torch.Tensor, capacity: int) -> torch.Tensor:
        buffer = states.new_empty((*states.shape[:2], capacity, states.size(-1)))
        buffer[:, :, : states.size(-2)] = states
        return buffer

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.size(-2)
        if end > self.key_buffer.size(-2):
            raise RuntimeError(f"KV cache full: {end} positions asked of a buffer of {self.key_buffer.size(-2)}")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length -= abs(tokens_to_remove)
        self._views()


def preallocate(cache, repeats: int, new_tokens: int) -> None:
    """Turn a prefilled cache's plain dynamic layers into preallocated ones with room for `new_tokens`
    more positions, each row repeated `repeats` times (G rows per prompt); other layer kinds (sliding
    windows, recurrent states) are only repeated."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            keys = layer.keys.repeat_interleave(repeats, dim=0)
            values = layer.values.repeat_interleave(repeats, dim=0)
            cache.layers[i] = PreallocatedLayer(keys, values, keys.size(-2) + new_tokens)
        else:
            layer.batch_repeat_interleave(repeats)
