"""KTO on unpaired thumbs with the same shared-prompt forward as DPO.

Production feedback is mostly one thumb per answer. KTO (Ethayarajh et al., 2024) learns from such rows
`(prompt, completion, desirable?)`; its reference point is a KL estimate made from each prompt with a completion of
ANOTHER question (TRL's KL rows). Both completions follow the same prompt, so a row is laid out exactly like a DPO
pair, `[prompt | completion | KL completion]`, and goes through `PrefixSharingDPOTrainer`'s collator, reference
precompute and forward: the prompt is computed once for the row and its KL row, and once for all rows of a question.

The loss is TRL's `kto` loss; the desirable/undesirable weights are set from the data's up/down balance so that
`desirable_weight * n_up / (undesirable_weight * n_down)` lies in TRL's recommended [1, 4/3].
"""
from __future__ import annotations

import random
from typing import Any

import torch

from rl.training.prefix_sharing import PrefixSharingDPOTrainer

# The middle of TRL's recommended range [1, 4/3] for desirable_weight * n_up / (undesirable_weight * n_down).
TARGET_BALANCE = 7 / 6


def kto_class_weights(n_desirable: int, n_undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight): the rarer side is weighted up, the other keeps weight 1."""
    if not n_desirable or not n_undesirable:
        raise ValueError("KTO needs both thumbs up and thumbs down.")
    if n_desirable * TARGET_BALANCE < n_undesirable:
        return TARGET_BALANCE * n_undesirable / n_desirable, 1.0
    return 1.0, n_desirable / (TARGET_BALANCE * n_undesirable)


def kto_rows(pair_rows: list[dict[str, Any]], unpaired_rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Rows shaped like DPO pairs: `chosen` is the rated completion, `rejected` its KL completion, `label` the thumb.

    Preference pairs add their chosen answer as desirable and their rejected one as undesirable, so a run trains on
    every rating: the pairs where they exist and the unpaired thumbs for the rest. A KL completion is another
    question's completion, picked with a seeded shuffle."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for pair in pair_rows:
        for side, label in (("chosen", True), ("rejected", False)):
            rows.setdefault((pair["scenario_id"], pair[side][0]["content"]),
                            {"prompt": pair["prompt"], "completion": pair[side], "label": label, "scenario_id": pair["scenario_id"]})
    for row in unpaired_rows:
        rows.setdefault((row["scenario_id"], row["completion"][0]["content"]), {**row})
    ordered = [rows[key] for key in sorted(rows)]
    if len({row["scenario_id"] for row in ordered}) < 2:
        raise ValueError("KTO needs ratings of at least two questions (a KL row pairs a prompt with another question's answer).")
    rng = random.Random(seed)
    donors = list(range(len(ordered)))
    rng.shuffle(donors)
    out = []
    for index, row in enumerate(ordered):
        step = 0
        while ordered[donors[(index + step) % len(donors)]]["scenario_id"] == row["scenario_id"]:
            step += 1
        out.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": ordered[donors[(index + step) % len(donors)]]["completion"],
                    "label": bool(row["label"]), "scenario_id": row["scenario_id"]})
    return out


class PrefixSharingKTOTrainer(PrefixSharingDPOTrainer):
    """TRL's `kto` loss on rows laid out as `[prompt | completion | KL completion]`. Metric names follow TRL's
    KTOTrainer: `kl`, `rewards/chosen`, `rewards/rejected`, `rewards/margins`, `logps/chosen`, `logps/rejected`,
    `count/chosen`, `count/rejected` (chosen = desirable rows)."""

    # KTO's KL term is a batch-wide mean, so its loss is not a sum over rows.
    ROW_BY_ROW_BACKWARD = False
    # Its rows carry two reference log-probs of their own (completion and KL completion): computed before training.
    REFERENCE_AT_FIRST_STEP = False

    def __init__(self, *args: Any, desirable_weight: float = 1.0, undesirable_weight: float = 1.0, **kwargs: Any):
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "label" not in self._signature_columns:
            self._signature_columns.append("label")

    def _compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        scored, ref_completion, ref_kl = self.scored_with_reference(model, inputs)
        labels = inputs["label"].bool()
        logratios = scored.chosen - ref_completion
        kl = self.accelerator.gather((scored.rejected - ref_kl).mean().detach()).mean().clamp(min=0)
        desirable = 1 - torch.sigmoid(self.beta * (logratios[labels] - kl))
        undesirable = 1 - torch.sigmoid(self.beta * (kl - logratios[~labels]))
        losses = torch.cat([self.desirable_weight * desirable, self.undesirable_weight * undesirable])
        loss = losses.mean()
        if "sft" in self.loss_types:
            weight = self.loss_weights[self.loss_types.index("sft")]
            answer = inputs["score_answer"]
            is_desirable = torch.zeros(int(inputs["num_answers"]), dtype=torch.bool, device=answer.device)
            is_desirable[inputs["pair_chosen"][labels]] = True
            mask = (answer >= 0) & is_desirable[answer.clamp(min=0)]
            if mask.any():
                token_weights = scored.token_weights[mask]
                loss = loss + weight * -(scored.token_logps[mask] * token_weights).sum() / token_weights.sum().clamp(min=1e-6)

        if mode == "train":
            self._total_train_tokens += int(inputs["num_tokens"])
        metrics = self._metrics[mode]
        metrics["num_tokens"] = [self._total_train_tokens]
        metrics["kl"].append(kl.item())
        rewards = self.beta * logratios.detach()
        if labels.any():
            metrics["rewards/chosen"].append(rewards[labels].mean().item())
            metrics["logps/chosen"].append(scored.chosen[labels].detach().mean().item())
        if (~labels).any():
            metrics["rewards/rejected"].append(rewards[~labels].mean().item())
            metrics["logps/rejected"].append(scored.chosen[~labels].detach().mean().item())
        if labels.any() and (~labels).any():
            metrics["rewards/margins"].append((rewards[labels].mean() - rewards[~labels].mean()).item())
        metrics["count/chosen"].append(float(labels.sum()))
        metrics["count/rejected"].append(float((~labels).sum()))
        if return_outputs:
            return loss, {"chosen_logps": scored.chosen, "rejected_logps": scored.rejected}
        return loss
