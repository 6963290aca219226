"""Each training row's input to the first adapted layer, kept from the reference pass that first scored the row, so
that the policy's forward over the same row in a later epoch starts at that layer too (`rl/core/frozen_layers.py`:
the layers below hold no adapter, so they compute the same at every step). Without it, every step after a row's first
ran the lower layers over the row again. A row is known by everything the lower layers read: the shared prefix, the
row's tokens, positions and attention mask.
"""
from __future__ import annotations

import hashlib

import torch

from rl.core.frozen_layers import LayerInput


def _bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype.is_floating_point:
        tensor = tensor.float()
    return str((tuple(tensor.shape), tensor.dtype)).encode() + tensor.view(torch.uint8).numpy().tobytes()


class KeptLayerInputs:
    """Rows' inputs to the first adapted layer, by `row_key`."""

    def __init__(self) -> None:
        self._rows: dict[bytes, LayerInput] = {}

    @staticmethod
    def row_key(prefix_ids: torch.Tensor | None, row: dict[str, torch.Tensor]) -> bytes:
        """What the lower layers read for `row` (one row of `row_of_batch`) after the prefix `prefix_ids`."""
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in (("prefix", prefix_ids), *((key, row[key]) for key in ("input_ids", "position_ids", "attention_mask"))):
            digest.update(name.encode())
            if tensor is not None:
                digest.update(_bytes(tensor))
        return digest.digest()

    def keep(self, key: bytes, layer_input: LayerInput) -> None:
        # A copy: the row is a view into its batch's hidden states, which would otherwise stay alive whole.
        self._rows[key] = LayerInput(layer_input.index, layer_input.hidden.clone())

    def get(self, key: bytes) -> LayerInput | None:
        return self._rows.get(key)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def nbytes(self) -> int:
        return sum(kept.hidden.numel() * kept.hidden.element_size() for kept in self._rows.values())
