"""EVA (explained variance adaptation): LoRA's `A` matrices started at the principal directions of each adapted
layer's inputs on the training prompts, instead of PEFT's random draw.

A rank-16 adapter learns mostly within the row space its `A` starts in; drawn at random, that space is the seed's, and
three seeds' trained deltas were nearly orthogonal (docs/training-recipe.md, round sixteen). EVA starts every seed in
the same data-chosen space. `B` stays zero, so the adapter starts as a no-op and the DPO reference (adapters off) is
the starting policy, as with the default init; every layer keeps the configured rank (EVA's `rho` of 1), so the saved
adapter has the shape of any other. Measured in round twenty-two: worse than the random start at seeds 2 and 7 (the
weak seeds stay weak: it is the batches they draw, not where the adapter starts); off in every preset.

The directions are computed here, exactly, from each layer's input covariance over one pass of the rows: PEFT's
`get_eva_state_dict` finds the same ones by incremental PCA, cycling through the batches until each component settles,
which took 118 s of a 2-core CPU for SmolLM2's 105 adapted modules (26 passes; this takes one pass per batch).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

EVA_ROWS = 64  # training rows (prompt and chosen answer) read, spread evenly over the dataset: the demo's, 28,000 tokens
EVA_BATCH_ROWS = 8


def eva_batches(dataset: Any, pad_token_id: int, *, rows: int = EVA_ROWS, batch_rows: int = EVA_BATCH_ROWS) -> list[dict[str, Any]]:
    """Batches of `prompt_ids + chosen_ids` (right-padded, with attention masks) from `rows` rows spread evenly over a
    TRL-tokenized preference dataset."""
    import torch

    n = len(dataset)
    if n == 0:
        raise ValueError("EVA needs training rows to read, and the dataset has none.")
    picked = sorted({round(i * (n - 1) / max(1, min(rows, n) - 1)) for i in range(min(rows, n))})
    sequences = [list(dataset[i]["prompt_ids"]) + list(dataset[i]["chosen_ids"]) for i in picked]
    batches = []
    for start in range(0, len(sequences), batch_rows):
        chunk = sequences[start:start + batch_rows]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


class _InputMoments:
    """Sum and sum of outer products of the (unpadded) inputs that LoRA modules see; modules that are called one after
    another on the same tensor (q, k and v; gate and up) share one accumulator."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.outer: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.leader: dict[str, str] = {}
        self.mask: Any = None
        self._last: tuple[Any, str] | None = None

    def start_batch(self, attention_mask: Any) -> None:
        self.mask, self._last = attention_mask.bool(), None

    def hook(self, name: str) -> Callable[..., None]:
        def record(module: Any, args: tuple[Any, ...]) -> None:
            x = args[0]
            if self._last is not None and self._last[0] is x:
                self.leader.setdefault(name, self._last[1])
                return
            self._last = (x, name)
            self.leader.setdefault(name, name)
            rows = x[self.mask].float() if self.mask is not None else x.reshape(-1, x.shape[-1]).float()
            if name not in self.sums:
                self.sums[name] = rows.sum(0).double()
                self.outer[name] = (rows.T @ rows).double()
                self.counts[name] = rows.shape[0]
            else:
                self.sums[name] += rows.sum(0).double()
                self.outer[name] += (rows.T @ rows).double()
                self.counts[name] += rows.shape[0]
        return record

    def directions(self, name: str, rank: int) -> Any:
        """The top `rank` eigenvectors of the centered input covariance, as rows, largest first."""
        import torch

        leader = self.leader[name]
        n = self.counts[leader]
        mean = self.sums[leader] / n
        covariance = self.outer[leader] / n - torch.outer(mean, mean)
        _, vectors = torch.linalg.eigh(covariance)
        return vectors[:, -rank:].flip(-1).T.float().contiguous()


def principal_input_directions(model: Any, batches: list[dict[str, Any]], *, autocast: Any = None) -> dict[str, Any]:
    """For each LoRA module of `model`'s (a PeftModel's) active adapter, its input's top principal directions (as many
    as its rank) over `batches`, read with the adapters off."""
    import torch

    adapter = model.active_adapter
    modules = {name: m for name, m in model.named_modules() if adapter in getattr(m, "lora_A", {})}
    moments = _InputMoments()
    handles = [m.register_forward_pre_hook(moments.hook(name)) for name, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.disable_adapter():
            for batch in batches:
                moments.start_batch(batch["attention_mask"])
                with autocast() if autocast is not None else contextlib.nullcontext():
                    model(**batch, logits_to_keep=1)  # the layers' inputs are what is read, not the vocabulary's logits
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: moments.directions(name, m.lora_A[adapter].weight.shape[0]) for name, m in modules.items()}


def eva_initialize(model: Any, batches: list[dict[str, Any]], *, autocast: Any = None) -> int:
    """Set the `A` matrices of `model`'s (a PeftModel's) active adapter to its inputs' principal directions over
    `batches`; returns how many modules were set. `autocast`: a context manager factory for the forward passes (the
    Trainer's, when the frozen weights are bf16)."""
    import torch

    began = time.perf_counter()
    adapter = model.active_adapter
    directions = principal_input_directions(model, batches, autocast=autocast)
    with torch.no_grad():
        for name, rows in directions.items():
            model.get_submodule(name).lora_A[adapter].weight.copy_(rows)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    logger.info("EVA: the A matrices of %d adapted modules start at their inputs' principal directions (%d tokens of %d "
                "training rows, %.0f s).", len(directions), tokens, sum(len(b["input_ids"]) for b in batches), time.perf_counter() - began)
    return len(directions)
