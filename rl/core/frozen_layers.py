"""The decoder layers below an adapter's lowest layer compute the same for the DPO policy and its reference: no adapter
sits there and nothing there is trained. A step that runs the reference over its rows can keep each row's input to the
first adapted layer and let the policy's forward start there (`rl/training/prefix_sharing.py`). With the `cpu` preset's
adapters on the top half of the layers, that is half of the policy's forward over its rows.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

# Backbones whose forward hands `inputs_embeds` unchanged to the first layer and runs every layer alike, so that the
# layers from `index` on, given their input as `inputs_embeds`, compute what they compute inside the whole forward
# (Gemma, for one, scales `inputs_embeds` first).
STARTS_AT_ANY_LAYER = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class LayerInput:
    """The hidden states entering decoder layer `index` for a batch's rows (padded as the batch is)."""

    index: int
    hidden: torch.Tensor

    def row(self, row: int, length: int) -> LayerInput:
        """Row `row`'s first `length` positions, as `row_of_batch` trims the row."""
        return LayerInput(self.index, self.hidden[row : row + 1, :length])


def _backbone_and_layers(causal_lm: Any) -> tuple[Any, Any]:
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    return backbone, getattr(backbone, "layers", None)


def can_start_at_a_layer(causal_lm: Any) -> bool:
    """Whether `starting_at` gives this model's forward from a layer what the whole forward computes there: a backbone
    in `STARTS_AT_ANY_LAYER`, every layer of one kind (not sliding and full attention mixed), no attention dropout."""
    config = causal_lm.config.get_text_config()
    _, layers = _backbone_and_layers(causal_lm)
    return (config.model_type in STARTS_AT_ANY_LAYER and layers is not None and not getattr(config, "attention_dropout", 0.0)
            and len(set(getattr(config, "layer_types", None) or [None])) <= 1)


def lower_layers_fingerprint(causal_lm: Any, first: int) -> tuple[float, ...]:
    """Sums (and sums of squares) of the input embeddings' and the first `first` layers' weights: equal for two models
    whose lower layers are the same weights, as a merged top-layer adapter leaves them."""
    _, layers = _backbone_and_layers(causal_lm)
    tensors = [causal_lm.get_input_embeddings().weight, *(p for layer in layers[:first] for p in layer.parameters())]
    with torch.no_grad():
        sums = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for t in tensors])
    return tuple(sums.flatten().tolist())


def first_adapted_layer(causal_lm: Any) -> int:
    """The lowest decoder layer holding a LoRA module of any adapter (the policy's, or a reference adapter's); 0 when
    the layers below it cannot be shared: no adapter, a backbone not in `STARTS_AT_ANY_LAYER`, layers of mixed kinds
    (sliding and full attention), or dropout below it (the two passes would drop different units)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not can_start_at_a_layer(causal_lm):
        return 0
    _, layers = _backbone_and_layers(causal_lm)
    for index, layer in enumerate(layers):
        modules = list(layer.modules())
        if any(isinstance(module, BaseTunerLayer) for module in modules):
            return index
        if any(isinstance(module, torch.nn.Dropout) and module.p > 0 for module in modules):
            return 0
    return 0


@contextmanager
def layer_input_captured(causal_lm: Any, index: int) -> Iterator[list[torch.Tensor]]:
    """Collects (detached) the hidden states that enter decoder layer `index` at each forward run inside the block."""
    _, layers = _backbone_and_layers(causal_lm)
    captured: list[torch.Tensor] = []

    def keep(module: Any, args: tuple, kwargs: dict) -> None:
        captured.append((args[0] if args else kwargs["hidden_states"]).detach())

    handle = layers[index].register_forward_pre_hook(keep, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def starting_at(causal_lm: Any, layer_input: LayerInput | None) -> Iterator[None]:
    """Inside the block the backbone's forward runs only the layers from `layer_input.index` on, taking their input as
    `inputs_embeds`; each layer keeps its own index into the key/value cache. No change when `layer_input` is None."""
    if layer_input is None:
        yield
        return
    backbone, layers = _backbone_and_layers(causal_lm)
    backbone.layers = layers[layer_input.index :]
    try:
        yield
    finally:
        backbone.layers = layers
