"""Confusion-weighted sampling: between epochs, the model's confusions on training questions set how often the next
epoch draws each question's pairs.

At the end of every epoch but the last, `ConfusionWeightedSampling` asks the model in training for constrained answers
to a fixed sample of training questions (as `BestPickCallback` asks held-out ones), reads each widget's recall, and
weighs every training row by 1 + `strength` x (1 - the recall of its chosen answer's widget). The batch sampler
(`PromptGroupedBatchSampler`, through `row_weights`) then draws each question about in proportion to its rows' weight.
A widget the check does not ask keeps weight 1. The check's figures go to the log and to metrics.jsonl as
`confusion/recall` and `confusion/weight`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rl.core.prompts import ANSWER_TOKEN_LIMIT, answered_widget
from rl.evaluation.evalset import EvalSet
from rl.training.callbacks import constrained_pick_metrics

logger = logging.getLogger(__name__)


def chosen_widgets(tokenizer: Any, chosen_ids: list[list[int]]) -> list[str | None]:
    """The widget each training row's chosen answer names (None where it names none)."""
    return [answered_widget(tokenizer.decode(ids, skip_special_tokens=True)) for ids in chosen_ids]


def widget_weights(per_widget: dict[str, dict[str, float]], strength: float) -> dict[str, float]:
    """Each asked widget's sampling weight, 1 + strength x (1 - recall), from `generation_metrics`' `per_widget`."""
    return {widget: 1 + strength * (1 - scores["recall"]) for widget, scores in per_widget.items() if scores["support"]}


class ConfusionWeightedSampling(TrainerCallback):
    def __init__(self, evalset: EvalSet, tokenizer: Any, strength: float, metrics_path: Path | None = None,
                 max_new_tokens: int = ANSWER_TOKEN_LIMIT):
        self.evalset, self.tokenizer, self.strength, self.metrics_path = evalset, tokenizer, strength, metrics_path
        self.max_new_tokens = max_new_tokens
        self.weight_of_widget: dict[str, float] | None = None  # None until a check: every row drawn once
        self._row_widgets: list[str | None] | None = None

    def row_weights(self, chosen_ids: list[list[int]]) -> list[float] | None:
        """The sampling weight of each training row (their chosen answers' token ids, in the sampler's row order); None
        before the first check."""
        if self.weight_of_widget is None:
            return None
        if self._row_widgets is None or len(self._row_widgets) != len(chosen_ids):
            self._row_widgets = chosen_widgets(self.tokenizer, chosen_ids)
        return [self.weight_of_widget.get(widget, 1.0) if widget else 1.0 for widget in self._row_widgets]

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None or state.global_step >= state.max_steps:
            return  # no epoch follows
        began = time.perf_counter()
        per_widget = constrained_pick_metrics(model, self.tokenizer, self.evalset, self.max_new_tokens,
                                              bool(getattr(args, "bf16", False)))["per_widget"]
        self.weight_of_widget = widget_weights(per_widget, self.strength)
        recall = {widget: round(scores["recall"], 3) for widget, scores in per_widget.items() if scores["support"]}
        weights = {widget: round(weight, 2) for widget, weight in sorted(self.weight_of_widget.items(), key=lambda item: -item[1])}
        logger.info("Confusion-weighted sampling after epoch %.0f: widget recall on %d training questions %s; the next epoch's "
                    "weights %s (%.0f s)", state.epoch, len(self.evalset.cases), recall, weights, time.perf_counter() - began)
        if self.metrics_path is not None and state.is_world_process_zero:
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, "confusion/recall": recall, "confusion/weight": weights,
                                         "time": time.time()}) + "\n")
