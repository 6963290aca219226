"""Training tokens' inputs to the first adapted layer, kept from the reference pass that first scored them, so that the
policy's forward over the same tokens in a later epoch starts at that layer too (`rl/core/frozen_layers.py`: the
layers below hold no adapter, so they compute the same at every step). Without it, every step after a row's first ran
the lower layers over the row again.

What a token's hidden state holds depends only on the tokens it reads: its path from the first token of the prefix
(the prompt, and for an answer's token the answer's tokens before it; answers of one prompt do not read each other).
The same row is laid out differently from epoch to epoch (another batch shares another common prefix, a prompt's pairs
fall into other batches, answers that begin alike share other tokens), so tokens are kept by their path, not rows.
"""
from __future__ import annotations

import hashlib

import torch

from rl.core.frozen_layers import LayerInput

_DIGEST = 16


def _step(parent: bytes, token: int, position: int) -> bytes:
    return hashlib.blake2b(parent + token.to_bytes(8, "little") + position.to_bytes(8, "little"), digest_size=_DIGEST).digest()


def prefix_key(prefix_ids: torch.Tensor | None) -> bytes:
    """The path key of a batch's shared prefix (one row of ids), from which its rows' tokens continue."""
    key = b""
    for position, token in enumerate([] if prefix_ids is None else prefix_ids[0].tolist()):
        key = _step(key, token, position)
    return key


def token_keys(prefix: bytes, row: dict[str, torch.Tensor]) -> list[bytes]:
    """Each token's path key in `row` (one row of `row_of_batch`, after the prefix whose key is `prefix`): the key of
    the last earlier token of the row that it reads (or the prefix's), extended by its own id and position."""
    mask = row["attention_mask"][0, 0]
    visible = mask if mask.dtype == torch.bool else mask == 0
    cached = visible.size(-1) - row["input_ids"].size(1)
    own = visible[:, cached:]
    reads_prefix = visible[:, :cached].any(dim=1).tolist()
    index = torch.arange(own.size(0), device=own.device)
    earlier = own & (index.unsqueeze(0) < index.unsqueeze(1))
    parents = torch.where(earlier, index.unsqueeze(0), -1).max(dim=1).values.tolist()
    keys: list[bytes] = []
    for token, position, parent, after_prefix in zip(row["input_ids"][0].tolist(), row["position_ids"][0].tolist(), parents,
                                                      reads_prefix, strict=True):
        # Padding reads only itself.
        keys.append(_step(keys[parent] if parent >= 0 else prefix if after_prefix else b"", token, position))
    return keys


class KeptLayerInputs:
    """Tokens' inputs to the first adapted layer, by their path keys (`token_keys`)."""

    def __init__(self) -> None:
        self._kept: list[torch.Tensor] = []  # per kept row, its tokens that were new then: (tokens, hidden size)
        self._where: dict[bytes, tuple[int, int]] = {}
        self.index: int | None = None

    def keep(self, keys: list[bytes], layer_input: LayerInput) -> None:
        """Keep a row's input (`layer_input`, one row) for the tokens not kept yet."""
        new = [position for position, key in enumerate(keys) if key not in self._where]
        if not new:
            return
        self.index = layer_input.index
        # A copy of the new tokens only: the row is a view into its batch's hidden states, which would stay alive whole.
        self._kept.append(layer_input.hidden[0, new].clone())
        for slot, position in enumerate(new):
            self._where[keys[position]] = (len(self._kept) - 1, slot)

    def row(self, keys: list[bytes]) -> LayerInput | None:
        """The row's input to the first adapted layer if every one of its tokens is kept, else None."""
        places = [self._where.get(key) for key in keys]
        if self.index is None or any(place is None for place in places):
            return None
        hidden = torch.stack([self._kept[kept][slot] for kept, slot in places])  # type: ignore[misc]
        return LayerInput(self.index, hidden.unsqueeze(0))

    def __len__(self) -> int:
        return len(self._where)

    @property
    def nbytes(self) -> int:
        return sum(hidden.numel() * hidden.element_size() for hidden in self._kept)
