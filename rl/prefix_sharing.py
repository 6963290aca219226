"""DPO with the prompt computed once per pair instead of twice.

A pair becomes ONE sequence `[prompt | chosen | rejected]`. Position ids restart the rejected answer right after the
prompt, and a 4D attention mask keeps the rejected tokens from seeing the chosen ones, so each answer is scored
exactly as if it followed the prompt alone. On this task the prompt is ~90% of the tokens, so a pair costs about
half the compute and activation memory of TRL's `[prompt | chosen]` + `[prompt | rejected]` batch. The LM head runs
only on the answer positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOTrainer


@dataclass
class PrefixSharingCollator:
    """TRL-tokenized preference rows (prompt_ids, chosen_ids, rejected_ids) -> shared-prefix batches.

    `score_index[b, j]` is the position whose hidden state predicts `score_target[b, j]`; `score_side` says whether
    that token belongs to the chosen (0) or rejected (1) answer, -1 for padding.
    """

    pad_token_id: int
    eager_attention: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples]
        width = max(lengths)
        n_scored = max(len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples)
        batch = len(examples)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros((batch, width), dtype=torch.long)
        allowed = torch.zeros((batch, width, width), dtype=torch.bool)
        score_index = torch.zeros((batch, n_scored), dtype=torch.long)
        score_target = torch.zeros((batch, n_scored), dtype=torch.long)
        score_side = torch.full((batch, n_scored), -1, dtype=torch.long)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        for b, example in enumerate(examples):
            prompt, chosen, rejected = example["prompt_ids"], example["chosen_ids"], example["rejected_ids"]
            p, c, r = len(prompt), len(chosen), len(rejected)
            input_ids[b, : p + c + r] = torch.tensor(prompt + chosen + rejected)
            position_ids[b, : p + c] = torch.arange(p + c)
            position_ids[b, p + c : p + c + r] = torch.arange(p, p + r)
            allowed[b, : p + c, : p + c] = causal[: p + c, : p + c]
            allowed[b, p + c : p + c + r, :p] = True
            allowed[b, p + c : p + c + r, p + c : p + c + r] = causal[:r, :r]
            pad = torch.arange(p + c + r, width)
            allowed[b, pad, pad] = True  # padding rows see themselves only, so no row is fully masked (NaN in SDPA)
            score_index[b, :c] = torch.arange(p - 1, p + c - 1)
            score_index[b, c : c + r] = torch.cat([torch.tensor([p - 1]), torch.arange(p + c, p + c + r - 1)])
            score_target[b, : c + r] = torch.tensor(chosen + rejected)
            score_side[b, :c] = 0
            score_side[b, c : c + r] = 1
        mask = allowed.unsqueeze(1)
        if self.eager_attention:
            mask = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, torch.finfo(torch.float32).min)
        out = {
            "input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask,
            "score_index": score_index, "score_target": score_target, "score_side": score_side,
            "num_tokens": torch.tensor(sum(lengths)),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                out[key] = torch.tensor([e[key] for e in examples])
        return out


def answer_token_logps(causal_lm: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the answers (batch, n_scored; 0 on padding), and their sums for chosen and rejected."""
    backbone = getattr(causal_lm, causal_lm.base_model_prefix)
    hidden = backbone(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"], use_cache=False
    ).last_hidden_state
    index = batch["score_index"].unsqueeze(-1).expand(-1, -1, hidden.size(-1))
    logits = causal_lm.get_output_embeddings()(hidden.gather(1, index)).float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, batch["score_target"].unsqueeze(-1)).squeeze(-1)
    side = batch["score_side"]
    token_logps = token_logps * (side >= 0)
    return token_logps, (token_logps * (side == 0)).sum(1), (token_logps * (side == 1)).sum(1)


class PrefixSharingDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer (datasets, chat template, reference handling, logging, checkpoints) with the pair's forward
    replaced by the shared-prefix one. Metric names are TRL's."""

    SUPPORTED_LOSSES = ("sigmoid", "sft", "ipo", "hinge")

    def __init__(self, *args: Any, max_pair_tokens: int | None = None, **kwargs: Any):
        # Set before TRL's __init__, which tokenizes the datasets through _prepare_dataset.
        self.max_pair_tokens = max_pair_tokens
        self.dropped_too_long: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        """TRL's tokenization, then drop (and count) pairs longer than `max_pair_tokens`; never truncate them."""
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if self.max_pair_tokens is None or "prompt_ids" not in dataset.column_names:
            return dataset
        limit = self.max_pair_tokens
        before = len(dataset)
        dataset = dataset.filter(
            lambda row: len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"]) <= limit,
            desc=f"Dropping {dataset_name} pairs longer than {limit} tokens",
        )
        self.dropped_too_long[dataset_name] = before - len(dataset)
        return dataset

    def _unwrapped_causal_lm(self, model: Any) -> Any:
        unwrapped = self.accelerator.unwrap_model(model)
        return unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        unwrapped = self.accelerator.unwrap_model(self.model)
        with torch.no_grad(), unwrapped.disable_adapter(), self.accelerator.autocast():
            _, chosen, rejected = answer_token_logps(self._unwrapped_causal_lm(self.model), inputs)
        return chosen, rejected

    def _compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        token_logps, chosen_logps, rejected_logps = answer_token_logps(self._unwrapped_causal_lm(model), inputs)
        if self.precompute_ref_logps:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(model, inputs)
        chosen_logratios = chosen_logps - ref_chosen
        rejected_logratios = rejected_logps - ref_rejected
        delta = chosen_logratios - rejected_logratios
        side = inputs["score_side"]
        loss = 0.0
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sigmoid":
                per_pair = -F.logsigmoid(self.beta * delta)
            elif loss_type == "hinge":
                per_pair = torch.relu(1 - self.beta * delta)
            elif loss_type == "ipo":
                n_chosen, n_rejected = (side == 0).sum(1).clamp(min=1), (side == 1).sum(1).clamp(min=1)
                per_pair = (chosen_logratios / n_chosen - rejected_logratios / n_rejected - 1 / (2 * self.beta)) ** 2
            elif loss_type == "sft":
                per_pair = (-token_logps[side == 0].mean()).expand(delta.size(0))
            else:
                raise ValueError(f"Loss {loss_type!r} is not supported with prefix sharing: use one of {self.SUPPORTED_LOSSES}.")
            loss = loss + per_pair.mean() * weight

        if mode == "train":
            self._total_train_tokens += int(inputs["num_tokens"])
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        chosen_rewards, rejected_rewards = self.beta * chosen_logratios.detach(), self.beta * rejected_logratios.detach()
        gather = self.accelerator.gather
        self._metrics[mode]["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        self._metrics[mode]["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        self._metrics[mode]["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        self._metrics[mode]["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        self._metrics[mode]["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        self._metrics[mode]["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        if return_outputs:
            return loss, {"chosen_logps": chosen_logps, "rejected_logps": rejected_logps}
        return loss
