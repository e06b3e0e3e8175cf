"""A KV cache for the sampler: one buffer per layer sized for the whole run, written in place.

transformers' `DynamicLayer` concatenates each new token's keys and values onto the whole cache, so
a decode step copies every cached state (O(length) per token, O(length^2) per completion).
`PreallocatedLayer` writes the new token into a buffer sized for prompt + max_new_tokens, allocated
once after the prefill, and hands attention a view of the filled part: the same keys and values, one
token's copy per step. Rows that ended leave the batch through `batch_select_indices`, compacted
inside the same buffer.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    def __init__(self, keys: torch.Tensor, values: torch.Tensor, repeats: int, capacity: int):
        """keys, values (b, heads, n, d) from a prefill; each row repeated `repeats` times (G rows per
        prompt) into a buffer with room for `capacity` positions."""
        super().__init__()
        self.device, self.length, self.is_initialized = keys.device, keys.size(-2), True
        self.key_buffer = self._buffer(keys, repeats, capacity)
        self.value_buffer = self._buffer(values, repeats, capacity)
        self._views()

    @staticmethod
    def _buffer(states: torch.Tensor, repeats: int, capacity: int) -> torch.Tensor:
        b, heads, n, d = states.shape
        buffer = states.new_empty((b * repeats, heads, capacity, d))
        buffer.view(b, repeats, heads, capacity, d)[:, :, :, :n] = states.unsqueeze(1)  # no repeated temporary
        return buffer

    def _views(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.size(-2)
        if end > self.get_max_length():
            raise RuntimeError(f"KV cache full: {end} positions asked of a buffer of {self.get_max_length()}")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._views()
        return self.keys, self.values

    def get_max_length(self) -> int:
        return self.key_buffer.size(-2)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows at `indices`, moved to the front of the same buffers (only the filled part is copied)."""
        rows = indices.numel()
        for buffer in (self.key_buffer, self.value_buffer):
            buffer[:rows, :, : self.length] = buffer[indices, :, : self.length]
        self.key_buffer, self.value_buffer = self.key_buffer[:rows], self.value_buffer[:rows]
        self._views()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx.to(self.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
        self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(0, self.length - abs(tokens_to_remove))
        self._views()

    def reset(self) -> None:
        """Empty, keeping the buffers (the next update writes from position 0)."""
        self.length = 0
        self._views()

    def offload(self) -> None:
        self.key_buffer = self.key_buffer.to("cpu", non_blocking=True)
        self.value_buffer = self.value_buffer.to("cpu", non_blocking=True)
        self._views()

    def prefetch(self) -> None:
        if self.key_buffer.device != self.device:
            self.key_buffer = self.key_buffer.to(self.device, non_blocking=True)
            self.value_buffer = self.value_buffer.to(self.device, non_blocking=True)
            self._views()


def preallocate(cache, repeats: int, new_tokens: int) -> None:
    """Turn a prefilled cache's plain dynamic layers into preallocated ones with room for `new_tokens`
    more positions, each row repeated `repeats` times (G rows per prompt); any other kind of layer
    (a sliding window, say) is repeated by its own `batch_repeat_interleave` and grows as before."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized and layer.keys.numel():
            cache.layers[i] = PreallocatedLayer(layer.keys, layer.values, repeats, layer.keys.size(-2) + new_tokens)
        else:
            layer.batch_repeat_interleave(repeats)
