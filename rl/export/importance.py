"""An importance matrix for llama.cpp's quantizer, as `llama-imatrix` computes one: for each weight matrix of the
decoder's layers, the mean square of each input column's activation over calibration prompts. The quantizer then
spends its precision on the columns that carry the most signal (llama.cpp PR 4861), keeping the same tensor types.

It is computed here with PyTorch on the merged model the export already holds (no llama.cpp tool to build), from the
prompts the model is asked: the task's prompts for the run's own scenarios, never an evaluation set's.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

# About 50,000 tokens of the demo's prompts, 105 s on 2 cores (32 prompts: 30 s); docs/training-recipe.md, round
# eighteen, has what each count gave.
DEFAULT_CALIBRATION_PROMPTS = 128


def gguf_architecture(gguf_path: str | Path) -> str:
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).get_field("general.architecture")
    return bytes(field.parts[field.data[0]]).decode()


def gguf_matrix_columns(gguf_path: str | Path) -> dict[str, int]:
    """Each 2-D tensor's name in the GGUF and its row length (llama.cpp's ne[0]: the matrix's input columns)."""
    import gguf

    return {t.name: int(t.shape[0]) for t in gguf.GGUFReader(str(gguf_path)).tensors if len(t.shape) == 2}


def gguf_tensor_names(model: Any, architecture: str) -> dict[str, str]:
    """The Linear modules of the decoder's layers by their GGUF tensor name ("blk.0.attn_q.weight"), through the
    `gguf` package's map of Hugging Face names."""
    import gguf
    import torch

    arch = next((a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture), None)
    if arch is None:
        return {}
    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    mapped = {}
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            tensor = names.get_name(module_name)
            if tensor is not None and tensor.startswith("blk."):
                mapped[f"{tensor}.weight"] = module_name
    return mapped


def activation_importance(model: Any, sequences: Iterable[Sequence[int]], tensor_names: Mapping[str, str]) -> dict[str, np.ndarray]:
    """For each GGUF tensor of `tensor_names` (GGUF name -> module name), the mean over every token of `sequences`
    of the square of each input column of its module: llama-imatrix's `in_sum2 / count`."""
    import torch

    modules = dict(model.named_modules())
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}

    def recorder(tensor: str) -> Any:
        def record(_module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
            rows = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            sums[tensor] = sums.get(tensor, 0) + (rows * rows).sum(0)
            counts[tensor] = counts.get(tensor, 0) + rows.shape[0]
        return record

    hooks = [modules[module].register_forward_hook(recorder(tensor)) for tensor, module in tensor_names.items()]
    try:
        model.eval()
        with torch.no_grad():
            for ids in tqdm(list(sequences), desc="importance matrix", leave=False, disable=None):
                model(torch.tensor([list(ids)], device=model.device))
    finally:
        for hook in hooks:
            hook.remove()
    return {tensor: (sums[tensor] / counts[tensor]).float().cpu().numpy() for tensor in sums}


def matching_importance(importance: Mapping[str, np.ndarray], gguf_path: str | Path) -> dict[str, np.ndarray]:
    """The entries whose tensor the GGUF holds with as many input columns: llama.cpp refuses a size that differs."""
    columns = gguf_matrix_columns(gguf_path)
    return {name: values for name, values in importance.items() if columns.get(name) == values.size}


def importance_for_gguf(model: Any, tokenizer: Any, prompts: Sequence[list[dict[str, str]]], gguf_path: str | Path) -> dict[str, np.ndarray]:
    """The importance matrix of `model` over the chat `prompts` (each as the model is asked it), for the tensors of
    the GGUF converted from it; empty when its architecture's names are unknown to the `gguf` package."""
    from rl.evaluation.evalset import tokenize_prompt

    names = gguf_tensor_names(model, gguf_architecture(gguf_path))
    if not names:
        return {}
    sequences = [tokenize_prompt(tokenizer, messages) for messages in prompts]
    importance = matching_importance(activation_importance(model, sequences, names), gguf_path)
    logger.info("Importance matrix: %d tensors from %d prompts (%d tokens)", len(importance), len(sequences), sum(map(len, sequences)))
    return importance
