"""Keys and values that grow in place while a model answers, instead of being concatenated at every token.

transformers' `DynamicLayer` appends a decoding step's keys and values with `torch.cat`, which copies the whole cache
of every layer at every generated token. Answering 32 natural questions (prompts of ~430 tokens, rows of 32) spent
15 of its 38 s in those copies on two AVX2 cores. `GrowingLayer` keeps each layer's keys and values in a buffer with
room for the next `ROOM` positions and writes new ones into it; its `keys` and `values` are views of the filled part,
so attention reads the same numbers. It took a fifth off answering with jemalloc's page decay off (the demo's setting)
and two fifths under an allocator that hands freed pages back (docs/evaluation.md). For decoding without gradients
only: an in-place write into a buffer that a backward pass had saved would break autograd.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

# Positions a buffer gains each time it fills: a decision answer takes 30 to 50 tokens, so two or three copies of the
# cache per answer instead of one per token, at 1/13 more memory for prompts of ~400 tokens.
ROOM = 32


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose appends write into a preallocated buffer (see the module's docstring)."""

    _layer_type = None  # not registered as transformers' layer for any attention type

    def __init__(self, room: int = ROOM):
        super().__init__()
        self.room = room
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def _holds_current(self) -> bool:
        """Whether `keys` and `values` are still the leading part of the buffers: cache methods that reorder, repeat
        or select rows assign new tensors, and the next append then starts new buffers from them."""
        if self._buffers is None:
            return False
        return all(part.data_ptr() == buffer.data_ptr() and part.stride() == buffer.stride() and part.shape[:2] == buffer.shape[:2]
                   for part, buffer in zip((self.keys, self.values), self._buffers))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self.get_seq_length(), key_states.shape[-2]
        if not self._holds_current() or self._buffers[0].shape[-2] < length + new:
            buffers = []
            for states, kept in ((key_states, self.keys), (value_states, self.values)):
                buffer = states.new_empty(*states.shape[:2], length + new + self.room, states.shape[-1])
                if length:
                    buffer[:, :, :length].copy_(kept)
                buffers.append(buffer)
            self._buffers = (buffers[0], buffers[1])
        keys, values = self._buffers
        keys[:, :, length : length + new].copy_(key_states)
        values[:, :, length : length + new].copy_(value_states)
        self.keys, self.values = keys[:, :, : length + new], values[:, :, : length + new]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        # Positions given back would be overwritten by the next append while a view taken before the crop still shows them.
        self._buffers = None
        super().crop(tokens_to_remove)

    def reset(self) -> None:
        self._buffers = None
        super().reset()


def growing_cache(cache: DynamicCache | None, config: Any) -> DynamicCache:
    """`cache` (a new empty one for `config`'s model when None) with each full-attention layer a `GrowingLayer` holding
    what it held; sliding-window and other layers stay as they are."""
    if cache is None:
        cache = DynamicCache(config=config)
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            growing = GrowingLayer()
            if layer.get_seq_length():
                growing.update(layer.keys, layer.values)
            cache.layers[index] = growing
    return cache
