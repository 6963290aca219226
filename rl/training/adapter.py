"""The LoRA adapter a run trains: its config, the layers it adapts, and starting from an adapter trained before."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rl.core.config import TrainingConfig

logger = logging.getLogger(__name__)


class AdapterError(ValueError):
    """An adapter to start from that does not fit the base model."""


def load_initial_adapter(model: Any, adapter_dir: str | Path) -> None:
    """Put the weights of a trained adapter into `model`'s fresh one (built with that adapter's LoRA config)."""
    from peft import load_peft_weights, set_peft_model_state_dict

    folder = Path(adapter_dir)
    try:
        result = set_peft_model_state_dict(model, load_peft_weights(str(folder), device="cpu"))
    except RuntimeError as exc:  # shape mismatch: trained on another base model
        raise AdapterError(f"The adapter at {folder} does not fit this base model: {exc}") from exc
    if result.unexpected_keys:
        raise AdapterError(f"The adapter at {folder} does not fit this base model: {len(result.unexpected_keys)} of its "
                           f"weights have no place in it (first: {result.unexpected_keys[0]}).")
    logger.info("Training continues from the adapter at %s", folder)


def adapted_layers(config: TrainingConfig, model: Any) -> list[int] | None:
    """The indices of the top `lora_layer_share` of the loaded model's layers (at least one); None for all."""
    if config.lora_layer_share >= 1:
        return None
    if model is None:
        raise RuntimeError("Load the base model before building its LoRA config: lora_layer_share needs its layer count.")
    n_layers = model.config.get_text_config().num_hidden_layers
    first = n_layers - max(1, round(n_layers * config.lora_layer_share))
    return list(range(first, n_layers))


def lora_config(config: TrainingConfig, model: Any) -> Any:
    """PEFT's LoraConfig for `config` on `model`; the config of `init_adapter` when the run continues one."""
    from peft import LoraConfig

    if config.init_adapter:
        return LoraConfig.from_pretrained(config.init_adapter, inference_mode=False)
    modules = config.lora_target_modules
    return LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=modules if modules == "all-linear" else [m.strip() for m in modules.split(",") if m.strip()],
        layers_to_transform=adapted_layers(config, model), task_type="CAUSAL_LM",
    )


def frozen_linears_to_bf16(model: Any) -> int:
    """Hold the base model's linear weights (frozen under LoRA) in bfloat16, for training under bf16 autocast on a CPU;
    returns how many weights were cast.

    Autocast casts an fp32 weight to bf16 at every call and keeps that copy for the backward pass; a frozen weight is
    the same bf16 tensor every time, so it is cast once here. The matrix products see exactly the bf16 values they saw
    before. The adapters PEFT adds stay fp32 (get_peft_model upcasts them), and so do the embeddings, which autocast does not
    cast for the embedding lookup; an LM head tied to them (SmolLM2) is untied, its copy in bf16."""
    import torch

    output = model.get_output_embeddings()
    cast = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not output and module.weight.dtype == torch.float32:
            module.to(torch.bfloat16)
            cast += 1
    if isinstance(output, torch.nn.Linear) and output.weight.dtype == torch.float32:
        # The LM head gets a bf16 copy of its own (untied from the embeddings, which stay fp32): cast at every call, its
        # 28M weights (SmolLM2) were a fresh 57 MB allocation a forward, 0.1-0.3 s of a reference pass of 4 pairs.
        output.weight = torch.nn.Parameter(output.weight.detach().to(torch.bfloat16), requires_grad=False)
        cast += 1
    # Loaded from safetensors, the weights are views of the file's memory map, which stays mapped (its pages read by
    # the cast resident, 0.4 GB for SmolLM2-135M) while any tensor still views it: the ones kept in fp32 get their own.
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype == torch.float32:
            tensor.data = tensor.data.clone()
    return cast
