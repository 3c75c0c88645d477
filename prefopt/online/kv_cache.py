"""A key/value cache for the sampler's decode loop that writes each step in place.

Hugging Face's ``DynamicCache`` appends a decoding step with ``torch.cat``, which copies the whole
cache of every layer on every step — at the quickstart's batches (100–192 rows, 70–200 positions)
that copy is an eighth to a quarter of a decode step's CPU time (docs/benchmarks.md).
:func:`preallocated_cache` returns a ``DynamicCache`` whose full-attention layers are
:class:`PreallocatedLayer`: one buffer per layer, sized for the prompt plus every token the decode
may add, written at the next free position, and handed to attention as a view of the filled part
(the same values ``cat`` would give, so decoding is unchanged to the bit). Sliding-window layers
(Gemma 3) keep their own class.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a ``[batch, heads, capacity, head_dim]`` buffer filled left to right.

    ``keys`` / ``values`` are views of the first ``length`` positions. The buffer doubles if an
    update would overflow it, so ``capacity`` is a size hint, never a limit.
    """

    def __init__(self, capacity: int, **kwargs):
        super().__init__(**kwargs)
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self._keys = key_states.new_empty(*key_states.shape[:2], self.capacity, key_states.shape[-1])
        self._values = value_states.new_empty(*value_states.shape[:2], self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def _resize(self, rows: torch.Tensor | None = None, repeats: int = 1, capacity: int | None = None) -> None:
        """New buffers holding the filled positions of ``rows`` (all if None), each row ``repeats`` times."""
        capacity = capacity or self.capacity
        keys, values = self._keys[:, :, : self.length], self._values[:, :, : self.length]
        if rows is not None:
            keys, values = keys[rows], values[rows]
        if repeats > 1:
            keys, values = keys.repeat_interleave(repeats, dim=0), values.repeat_interleave(repeats, dim=0)
        self._keys = keys.new_empty(*keys.shape[:2], capacity, keys.shape[-1])
        self._values = values.new_empty(*values.shape[:2], capacity, values.shape[-1])
        self._keys[:, :, : self.length] = keys
        self._values[:, :, : self.length] = values
        self.capacity = capacity
        self._expose()

    def _expose(self) -> None:
        self.keys, self.values = self._keys[:, :, : self.length], self._values[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            self._resize(capacity=max(end, 2 * self.capacity))
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def reset(self) -> None:
        self.length = 0
        super().reset()

    def crop(self, *args, **kwargs) -> None:
        """``DynamicLayer.crop`` (whose argument differs between transformers releases) on the views."""
        if self.is_initialized:
            super().crop(*args, **kwargs)
            self.length = self.keys.shape[-2]
            self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self._resize(repeats=repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._resize(rows=indices)


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose plain full-attention layers write in place (capacity positions)."""
    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
