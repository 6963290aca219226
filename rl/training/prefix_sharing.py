"""`PrefixSharingDPOTrainer`: TRL's DPOTrainer (tokenization, PEFT reference, logging, checkpoints) with each pair's
forward replaced by the shared-prefix one of `rl/core/shared_prefix.py`, and reference log-probs computed once per
row: the eval set's before training, each training row's at the step that first trains it, the prefix its batches
share (the system prompt) once for all of them. A training batch's rows run forward and backward one at a time
against the shared prefix, so that one row's activations are held, not the batch's. When the reference runs over a
batch's rows in the step, the policy's forward over them starts at the first adapted layer from the reference's input
to it (`rl/core/frozen_layers.py`: the layers below hold no adapter), and so does its forward over the same rows in
later epochs, from that input kept (`rl/training/kept_layer_inputs.py`). With `prompt_gradient_tokens` set, each row's
prompt runs without gradient but for its last tokens (`answer_logps_after_frozen_prompt`). Metric names are TRL's.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from trl import DPOTrainer

from rl.core.config import DPO_LOSSES
from rl.core.frozen_layers import LayerInput, first_adapted_layer, layer_input_captured
from rl.core.shared_prefix import (
    AnswerLogps,
    LeafPrefix,
    ReusedPrefix,
    answer_logps,
    answer_logps_after_frozen_prompt,
    chosen_tokens,
    decision_token_count,
    prefix_cache,
    row_of_batch,
)
from rl.training.confusion import chosen_widgets
from rl.training.kept_layer_inputs import KeptLayerInputs, prefix_key, token_keys
from rl.training.sampler import PromptGroupedBatchSampler, prompt_key, prompt_sorted_order

logger = logging.getLogger(__name__)

# The name TRL gives the frozen copy of a trained adapter it is asked to continue.
REFERENCE_ADAPTER = "ref"


class PrefixSharingDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer (tokenization with the chat template, PEFT reference, logging, checkpoints) with the pair's
    forward replaced by the shared-prefix one. Metric names are TRL's."""

    SUPPORTED_LOSSES = DPO_LOSSES
    # A training batch's rows (one prompt's answers each) run forward and backward one at a time: see `_row_by_row_step`.
    ROW_BY_ROW_BACKWARD = True
    # With precompute_ref_log_probs, a training row's reference log-probs are computed at the step that first trains
    # it and kept (`reference_logps`), not all before the first step: a run that its time budget ends early pays only
    # for the rows it trained on (a 2-core CPU without AMX spent 5.5 of its 13 minutes on the reference pass). One
    # process only: several share one table computed before training, each pair by one of them.
    REFERENCE_AT_FIRST_STEP = True

    def __init__(self, *args: Any, max_pair_tokens: int | None = None, **kwargs: Any):
        # Set before TRL's __init__, which tokenizes the datasets through _prepare_dataset.
        self.max_pair_tokens = max_pair_tokens
        self.dropped_too_long: dict[str, int] = {}
        # What weighs the training rows an epoch draws (`ConfusionWeightedSampling`); None: every row once an epoch.
        self.row_weighting: Any = None
        # Whether an epoch spreads each widget's questions evenly over its batches (`spread_by_label`).
        self.widget_spread_batches = False
        self._reference_prefix = ReusedPrefix()
        self._first_adapted_layer: int | None = None
        # The batch's rows' input to the first adapted layer, from the reference pass that `reference_logps` ran for it
        # in this step (None when it read kept values): the policy's forward over those rows starts there.
        self._reference_layer_input: LayerInput | None = None
        # Tokens' inputs to the first adapted layer across epochs (`KeptLayerInputs`); None: not kept (NEFTune's noise on
        # the embeddings has to be drawn afresh at every step).
        self.kept_layer_inputs: KeptLayerInputs | None = KeptLayerInputs()
        self._logged_kept_layer_inputs = False
        # k >= 1: the row-by-row step runs each row's prompt without gradient but its last k tokens
        # (`answer_logps_after_frozen_prompt`); -1: with gradient throughout.
        self.prompt_gradient_tokens = -1
        self._warned_prompt_gradient = False
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """TRL's tokenization, then drop (and count) pairs longer than `max_pair_tokens` (never truncate them), and
        order rows by prompt so the sequential passes (reference log-probs, eval) batch shared prompts together."""
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if "prompt_ids" not in dataset.column_names:
            return dataset
        if self.max_pair_tokens is not None:
            limit, before = self.max_pair_tokens, len(dataset)
            dataset = dataset.filter(
                lambda row: len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"]) <= limit,
                desc=f"Dropping {dataset_name} pairs longer than {limit} tokens",
            )
            self.dropped_too_long[dataset_name] = before - len(dataset)
        if "chosen_decision_tokens" not in dataset.column_names:
            dataset = dataset.map(lambda row: {"chosen_decision_tokens": decision_token_count(processing_class, row["chosen_ids"])},
                                  desc=f"Finding the decision tokens of {dataset_name} answers")
        return dataset.select(prompt_sorted_order(dataset["prompt_ids"]))

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "chosen_ids", "rejected_ids", "chosen_decision_tokens", "ref_chosen_logps",
                                       "ref_rejected_logps", "pair_index"]

    def get_train_dataloader(self) -> DataLoader:
        """Batches from `PromptGroupedBatchSampler`, dealt across processes by accelerate."""
        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        weighting = self.row_weighting
        batches = PromptGroupedBatchSampler(
            [prompt_key(ids) for ids in dataset["prompt_ids"]], self._train_batch_size, self.args.seed,
            self.accelerator.num_processes, epoch_of=lambda: int(self.state.epoch or 0),
            row_weights_of=(lambda: weighting.row_weights(dataset["chosen_ids"])) if weighting is not None else None,
            row_labels=chosen_widgets(self.processing_class, dataset["chosen_ids"]) if self.widget_spread_batches else None,
        )
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """The reference's log-probs of every row, each computed by one process and shared with all (TRL's version
        passes them through a cache file that only works for datasets stored on disk)."""
        from accelerate.utils import tqdm
        from trl.models import prepare_deepspeed

        if name == "train" and self.REFERENCE_AT_FIRST_STEP and self.accelerator.num_processes == 1:
            self._train_reference: dict[int, tuple[float, float]] = {}
            return dataset.add_column("pair_index", list(range(len(dataset))))
        if self.is_deepspeed_enabled and self.ref_model is None and self._precompute_engine is None:
            # Places (ZeRO-1/2) or gathers (ZeRO-3) the parameters for the forward passes below.
            self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
        loader = self.accelerator.prepare(DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=self.data_collator,
                                                     num_workers=self.args.dataloader_num_workers))
        chosen, rejected = [], []
        for batch in tqdm(loader, desc=f"Computing reference log probs for {name} dataset", disable=self.args.disable_tqdm):
            batch_chosen, batch_rejected = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(self.model, batch))
            chosen.append(batch_chosen.float().cpu())
            rejected.append(batch_rejected.float().cpu())
        dataset = dataset.add_column("ref_chosen_logps", torch.cat(chosen).tolist())
        return dataset.add_column("ref_rejected_logps", torch.cat(rejected).tolist())

    def _unwrapped_causal_lm(self, model: Any) -> Any:
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """TRL's reference for a PEFT policy: the frozen copy of a trained starting adapter (`ref`), which TRL makes when
        given a PeftModel, or else the base model (adapters off)."""
        from trl.trainer.utils import use_adapter

        unwrapped = self.accelerator.unwrap_model(self.model)
        reference = REFERENCE_ADAPTER if REFERENCE_ADAPTER in unwrapped.peft_config else None
        causal_lm = self._unwrapped_causal_lm(self.model)
        if self._first_adapted_layer is None:
            self._first_adapted_layer = first_adapted_layer(causal_lm)
        first = self._first_adapted_layer
        with torch.no_grad(), use_adapter(unwrapped, reference), self.accelerator.autocast():
            cache = None
            if "prefix_ids" in inputs:
                # In bf16 a prefix run in two pieces rounds differently from one run whole, as the policy runs it: the
                # reference's log-probs would move by up to ~0.1 nat, and rewards at identical weights would not be 0.
                cache = self._reference_prefix.cache(causal_lm, inputs["prefix_ids"], inputs["input_ids"].size(0), layer_index=first,
                                                     reuse=not (self.args.bf16 or self.args.fp16))
            with layer_input_captured(causal_lm, first) if first > 0 else nullcontext([]) as captured:
                scored = answer_logps(causal_lm, inputs, cache=cache)
        self._reference_layer_input = LayerInput(first, captured[0]) if first > 0 else None
        return scored.chosen, scored.rejected

    def reference_logps(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's log-probs of the batch's pairs: precomputed (the eval set's), kept from the step that first
        trained the rows (`pair_index`), or computed now with the adapter off (and kept, for training rows)."""
        if "ref_chosen_logps" in inputs:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        if "pair_index" not in inputs:
            return self.compute_ref_log_probs(model, inputs)
        keys = inputs["pair_index"].tolist()
        if any(key not in self._train_reference for key in keys):
            chosen, rejected = self.compute_ref_log_probs(model, inputs)
            self._train_reference.update(zip(keys, zip(chosen.float().tolist(), rejected.float().tolist(), strict=True), strict=True))
        kept = torch.tensor([self._train_reference[key] for key in keys], device=inputs["pair_index"].device)
        return kept[:, 0], kept[:, 1]

    def _reference_then_layer_input(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, LayerInput | None]:
        """`reference_logps`, and the rows' input to the first adapted layer when the reference pass ran now."""
        self._reference_layer_input = None
        chosen, rejected = self.reference_logps(model, inputs)
        layer_input, self._reference_layer_input = self._reference_layer_input, None
        return chosen, rejected, layer_input

    def scored_with_reference(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[AnswerLogps, torch.Tensor, torch.Tensor]:
        """The policy's answer log-probs and the reference's (`reference_logps`), the reference first: when it runs
        now, the policy's forward starts at the first adapted layer from the rows' input to it."""
        ref_chosen, ref_rejected, layer_input = self._reference_then_layer_input(model, inputs)
        # The unwrapped model's forward is not the one accelerate wrapped in autocast: mixed precision is entered here.
        with self.accelerator.autocast():
            scored = answer_logps(self._unwrapped_causal_lm(model), inputs, layer_input=layer_input)
        return scored, ref_chosen, ref_rejected

    def _mean_over_processes(self, values: torch.Tensor) -> float:
        """The mean over every process's pairs; processes may hold different numbers of pairs in a step."""
        totals = torch.stack([values.float().sum(), torch.tensor(float(values.numel()), device=values.device)])
        totals = self.accelerator.reduce(totals, reduction="sum")
        return (totals[0] / totals[1].clamp(min=1)).item()

    def _loss_of_pairs(self, scored: AnswerLogps, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor,
                       inputs: dict[str, torch.Tensor], n_pairs: int, sft_weight_total: torch.Tensor) -> torch.Tensor:
        """The batch's loss restricted to the pairs in `scored`: each pair's terms over the batch's `n_pairs`, the SFT
        term's tokens over the batch's total chosen-token weight, so that the pieces of a batch add up to its loss."""
        delta = chosen_logratios - rejected_logratios
        loss = delta.new_zeros(())
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sigmoid":
                per_pair = -(1 - self.label_smoothing) * F.logsigmoid(self.beta * delta) - self.label_smoothing * F.logsigmoid(-self.beta * delta)
            elif loss_type == "hinge":
                per_pair = torch.relu(1 - self.beta * delta)
            elif loss_type == "ipo":
                lengths = torch.bincount(inputs["score_answer"][inputs["score_answer"] >= 0], minlength=int(inputs["num_answers"]))
                n_chosen, n_rejected = lengths[inputs["pair_chosen"]].clamp(min=1), lengths[inputs["pair_rejected"]].clamp(min=1)
                per_pair = (chosen_logratios / n_chosen - rejected_logratios / n_rejected - 1 / (2 * self.beta)) ** 2
            elif loss_type == "sft":
                weights = scored.token_weights[scored.chosen_token_mask]
                loss = loss + weight * -(scored.token_logps[scored.chosen_token_mask] * weights).sum() / sft_weight_total.clamp(min=1e-6)
                continue
            else:
                raise ValueError(f"Loss {loss_type!r} is not supported with prefix sharing: use one of {self.SUPPORTED_LOSSES}.")
            loss = loss + weight * per_pair.sum() / n_pairs
        return loss

    @staticmethod
    def _chosen_token_weight(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The SFT term's denominator: the summed weights of the tokens of every answer that is some pair's chosen one."""
        mask = chosen_tokens(inputs)
        return inputs.get("score_weight", mask.float())[mask].sum()

    def _record_metrics(self, mode: str, inputs: dict[str, torch.Tensor], chosen_logratios: torch.Tensor,
                        rejected_logratios: torch.Tensor, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> None:
        if mode == "train":
            self._total_train_tokens += int(inputs["num_tokens"])
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        chosen_rewards, rejected_rewards = self.beta * chosen_logratios.detach(), self.beta * rejected_logratios.detach()
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(self._mean_over_processes(chosen_rewards))
        metrics["rewards/rejected"].append(self._mean_over_processes(rejected_rewards))
        metrics["rewards/accuracies"].append(self._mean_over_processes((chosen_rewards > rejected_rewards).float()))
        metrics["rewards/margins"].append(self._mean_over_processes(chosen_rewards - rejected_rewards))
        metrics["logps/chosen"].append(self._mean_over_processes(chosen_logps.detach()))
        metrics["logps/rejected"].append(self._mean_over_processes(rejected_logps.detach()))

    def _compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        scored, ref_chosen, ref_rejected = self.scored_with_reference(model, inputs)
        chosen_logratios = scored.chosen - ref_chosen
        rejected_logratios = scored.rejected - ref_rejected
        loss = self._loss_of_pairs(scored, chosen_logratios, rejected_logratios, inputs, chosen_logratios.size(0),
                                   self._chosen_token_weight(inputs))
        self._record_metrics(mode, inputs, chosen_logratios, rejected_logratios, scored.chosen, scored.rejected)
        if return_outputs:
            return loss, {"chosen_logps": scored.chosen, "rejected_logps": scored.rejected}
        return loss

    def _backward_row_by_row(self, inputs: dict[str, torch.Tensor]) -> bool:
        """Whether this training batch goes through `_row_by_row_step`: several rows, one process, no DeepSpeed
        (DDP would reduce gradients at every row's backward, DeepSpeed owns the backward)."""
        from accelerate.utils import DistributedType

        return (self.ROW_BY_ROW_BACKWARD and "row_lengths" in inputs and (inputs["input_ids"].size(0) > 1 or self.prompt_gradient_tokens != -1)
                and self.accelerator.distributed_type == DistributedType.NO)

    def training_step(self, model: Any, inputs: dict[str, torch.Tensor], num_items_in_batch: Any = None) -> torch.Tensor:
        if not self._backward_row_by_row(inputs):
            if self.prompt_gradient_tokens != -1 and not self._warned_prompt_gradient:
                self._warned_prompt_gradient = True
                logger.warning("prompt_gradient_tokens applies to the one-process row-by-row step; this run's steps back-propagate through their whole prompts.")
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        with self.maybe_activation_offload_context, self.compute_loss_context_manager():
            return self._row_by_row_step(model, inputs, 1 / self.current_gradient_accumulation_steps)

    def _rows_layer_inputs(self, inputs: dict[str, torch.Tensor], rows: list[dict[str, torch.Tensor]],
                           layer_input: LayerInput | None) -> list[LayerInput | None]:
        """Each row's input to the first adapted layer: from this step's reference pass (and kept for the tokens' later
        steps), or kept from the steps that first ran its tokens; None where neither (the row's forward starts at its
        tokens)."""
        fresh = [None if layer_input is None else layer_input.row(index, sub["input_ids"].size(1)) for index, sub in enumerate(rows)]
        if self.kept_layer_inputs is None or not self._first_adapted_layer:
            return fresh  # nothing to keep or find: no layer below the adapters (or no reference pass ran here)
        prefix = prefix_key(inputs.get("prefix_ids"))
        keys = [token_keys(prefix, sub) for sub in rows]
        if layer_input is not None:
            for row_keys, row_input in zip(keys, fresh, strict=True):
                self.kept_layer_inputs.keep(row_keys, row_input)
            return fresh
        kept = [self.kept_layer_inputs.row(row_keys) for row_keys in keys]
        if not self._logged_kept_layer_inputs and any(row_input is not None for row_input in kept):
            self._logged_kept_layer_inputs = True
            logger.info("Rows trained again start at layer %d from their tokens' kept input to it (%d tokens, %.0f MB).",
                        self._first_adapted_layer, len(self.kept_layer_inputs), self.kept_layer_inputs.nbytes / 2**20)
        return kept

    def _row_by_row_step(self, model: Any, inputs: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        """Forward and backward one row (one prompt's answers) at a time, so that only one row's activations are held:
        the shared prefix runs once, its keys and values collect every row's gradient as leaves, and one backward
        through the prefix ends the step. The gradients are the whole batch's (the loss is a sum over rows)."""
        causal_lm = self._unwrapped_causal_lm(model)
        ref_chosen, ref_rejected, layer_input = self._reference_then_layer_input(model, inputs)
        n_pairs, sft_weight_total = inputs["pair_chosen"].numel(), self._chosen_token_weight(inputs)
        rows = [row_of_batch(inputs, row) for row in range(inputs["input_ids"].size(0))]
        row_inputs = self._rows_layer_inputs(inputs, [sub for sub, _ in rows], layer_input)
        prefix = None
        if "prefix_ids" in inputs:
            with self.accelerator.autocast(), nullcontext() if self.prompt_gradient_tokens == -1 else torch.no_grad():
                cache = None
                if any(row_input is not None for row_input in row_inputs):
                    cache = self._reference_prefix.cache_for_adapted(causal_lm, inputs["prefix_ids"])
                prefix = LeafPrefix.of(cache if cache is not None else prefix_cache(causal_lm, inputs["prefix_ids"], 1))
        total = torch.zeros((), device=inputs["input_ids"].device)
        pieces: list[tuple[torch.Tensor, ...]] = []
        for index, ((sub, pairs), row_input) in enumerate(zip(rows, row_inputs, strict=True)):
            # A row packed with several prompt groups (a batch whose prompts share no prefix) is back-propagated whole.
            one_group = int(inputs["row_groups"][index]) == 1 if "row_groups" in inputs else False
            row_cache = None if prefix is None else prefix.cache()
            with self.accelerator.autocast():
                if self.prompt_gradient_tokens != -1 and one_group:
                    scored = answer_logps_after_frozen_prompt(causal_lm, sub, cache=row_cache, layer_input=row_input,
                                                              gradient_tokens=self.prompt_gradient_tokens)
                else:
                    scored = answer_logps(causal_lm, sub, cache=row_cache, layer_input=row_input)
            chosen_logratios, rejected_logratios = scored.chosen - ref_chosen[pairs], scored.rejected - ref_rejected[pairs]
            loss = self._loss_of_pairs(scored, chosen_logratios, rejected_logratios, sub, n_pairs, sft_weight_total)
            self.accelerator.backward(loss * scale)
            total += loss.detach()
            pieces.append(tuple(t.detach() for t in (chosen_logratios, rejected_logratios, scored.chosen, scored.rejected)))
        if prefix is not None:
            prefix.backward()
        self._record_metrics("train", inputs, *(torch.cat(parts) for parts in zip(*pieces, strict=True)))
        return total * scale
