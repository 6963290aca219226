"""The layers below an adapter's lowest one computed once for the base and the tuned model of an evaluation.

A LoRA adapter on the top layers only (the `cpu` preset's `lora_layer_share 0.5`: SmolLM2's layers 15 to 29) leaves
the embeddings and the layers below its lowest one as the base's, merged or not. `evaluate_model --compare-base`
scores the base's pairs and then the tuned model's, batch for batch the same rows: the base's pass keeps each row's
input to that layer, and the tuned model's pass starts there instead of running the lower layers again (the same
arithmetic on the same numbers, so the same scores). The tuned model's kept prompts (`rl/evaluation/prompt_cache.py`)
take their lower layers' keys and values from the base's. Natural gate part, fp32 on two AVX2 cores: the tuned
model's 635 pairs scored in 93 s instead of about 160. Nothing is shared when the base's scores come from its cache
(no base pass runs).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from rl.core.frozen_layers import LayerInput
    from rl.evaluation.prompt_cache import PromptKeyValues

logger = logging.getLogger(__name__)

# What the kept inputs may take (SmolLM2's natural gate part, by an estimate: 20 batches of ~8 rows of ~320 positions
# of 576 fp32 values, about 0.1 GB); batches past it are not kept, and the tuned model computes them whole.
MAX_BYTES = 2 * 1024**3


def layers_the_adapter_leaves(adapter_dir: str | Path) -> int:
    """The index of the lowest decoder layer a saved LoRA adapter changes: the layers below it (and the embeddings)
    stay the base's. 0 when it changes every layer, or also trains whole modules or token embeddings."""
    from peft import PeftConfig

    adapter = PeftConfig.from_pretrained(str(adapter_dir))
    layers = getattr(adapter, "layers_to_transform", None)
    if (adapter.peft_type != "LORA" or layers is None or getattr(adapter, "modules_to_save", None)
            or getattr(adapter, "trainable_token_indices", None)):
        return 0
    return min([layers] if isinstance(layers, int) else layers)


class LowerLayers:
    """The base's inputs to layer `first` of each scored batch, then served to the tuned model's same batches.

    Recording until `serve` hands over the base's kept prompts; a model whose embeddings and lower layers differ from
    the recording one's (checked by their fingerprint) is served nothing."""

    def __init__(self, first: int, max_bytes: int = MAX_BYTES):
        self.first, self.max_bytes = first, max_bytes
        self.bytes = 0
        self.served = 0  # batches the tuned model started at layer `first`
        self.prompt_key_values: PromptKeyValues | None = None
        self._inputs: dict[str, torch.Tensor] = {}
        self._fingerprint: tuple[float, ...] | None = None
        self._checked: dict[int, bool] = {}  # id of a served model -> whether its lower layers are the base's

    @classmethod
    def below_adapter(cls, adapter_dir: str | Path) -> LowerLayers | None:
        first = layers_the_adapter_leaves(adapter_dir)
        return cls(first) if first > 0 else None

    @staticmethod
    def _key(batch: dict[str, torch.Tensor]) -> str:
        digest = hashlib.sha256()
        for name in ("prefix_ids", "input_ids", "position_ids"):
            tensor = batch[name]
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        return digest.hexdigest()

    def records_for(self, causal_lm: Any) -> bool:
        """Whether the pass of `causal_lm` (the base, before `serve`) should keep its rows' inputs."""
        from rl.core.frozen_layers import can_start_at_a_layer, lower_layers_fingerprint

        if self.serving or not can_start_at_a_layer(causal_lm):
            return False
        if self._fingerprint is None:
            self._fingerprint = lower_layers_fingerprint(causal_lm, self.first)
        return True

    def record(self, batch: dict[str, torch.Tensor], hidden: torch.Tensor) -> None:
        size = hidden.numel() * hidden.element_size()
        if self.bytes + size <= self.max_bytes:
            self.bytes += size
            self._inputs[self._key(batch)] = hidden

    def serve(self, prompt_key_values: PromptKeyValues) -> None:
        """The base has scored: from now on its kept inputs (and its kept prompts) serve the tuned model."""
        self.prompt_key_values = prompt_key_values

    @property
    def serving(self) -> bool:
        return self.prompt_key_values is not None

    def input_for(self, causal_lm: Any, batch: dict[str, torch.Tensor]) -> LayerInput | None:
        """The rows' input to layer `first` as the base computed it, for a model with the base's lower layers."""
        from rl.core.frozen_layers import LayerInput, lower_layers_fingerprint

        if not self.serving or not self._inputs:
            return None
        if id(causal_lm) not in self._checked:
            self._checked[id(causal_lm)] = lower_layers_fingerprint(causal_lm, self.first) == self._fingerprint
            if not self._checked[id(causal_lm)]:
                logger.warning("The tuned model's layers below layer %d are not the base's: it computes them itself.", self.first)
        hidden = self._inputs.get(self._key(batch)) if self._checked[id(causal_lm)] else None
        if hidden is None:
            return None
        self.served += 1
        return LayerInput(self.first, hidden)
