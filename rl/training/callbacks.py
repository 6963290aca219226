"""Trainer callbacks: metrics to metrics.jsonl, a progress bar, and the adapter with the best held-out pick accuracy.

`BestPickCallback` keeps the adapter with the best held-out pick accuracy seen during training, not necessarily the
last one. At every evaluation it asks the model in training for constrained answers (the answer schema of
`rl/core/prompts.py`, as `evaluate_model` does) to a fixed sample of held-out scenarios, scores widget and fixture
accuracy, and remembers the adapter weights when their mean is within one question of the best so far
(`pick_tolerance`): of checks that close, the later one, which has trained on more pairs, is kept. When training ends
the kept weights are put back, so `final/` holds them. Scores go to the log and to metrics.jsonl as
`pick/widget_accuracy`, `pick/fixture_accuracy` and `pick/score`. With `average_adapter_from` it also keeps the mean of
the adapter's weights over the steps after that share of the run (`AdapterAverage`), and checks that mean last, as a
candidate like the others (`pick/averaged_steps` in its record).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rl.core.allocator import bound_freed_pages
from rl.core.prompts import ANSWER_TOKEN_LIMIT
from rl.evaluation.backends import TorchBackend
from rl.evaluation.evalset import EvalSet
from rl.evaluation.metrics import generation_metrics

logger = logging.getLogger(__name__)


def metrics_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class MetricsJsonl(TrainerCallback):
        """Every logged step, appended to metrics.jsonl (loss, rewards/*, logps/*, learning_rate, eval_*)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if logs and state.is_world_process_zero:
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}) + "\n")

    return MetricsJsonl()


def eval_summary(logs: dict[str, Any]) -> dict[str, float]:
    """The evaluation figures a person reads during training."""
    return {k: round(v, 4) for k, v in logs.items() if k in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins")}


def progress_callback() -> Any:
    from transformers.trainer_callback import ProgressCallback

    class RewardProgress(ProgressCallback):
        """The Trainer's progress bar, with loss and reward accuracy beside it instead of dicts printed below it."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs:
                return
            if self.training_bar is not None and "loss" in logs:
                postfix = {"loss": f"{logs['loss']:.3f}"}
                if "rewards/accuracies" in logs:
                    postfix["reward_acc"] = f"{logs['rewards/accuracies']:.2f}"
                self.training_bar.set_postfix(postfix)
            elif any(key.startswith("eval_") for key in logs):
                shown = eval_summary(logs)
                self.training_bar.write(f"eval at step {state.global_step}: {shown}") if self.training_bar else logger.info("eval: %s", shown)

    return RewardProgress


STEP_LINES = 20  # about how many step lines a run logs off a terminal, however long it is


def step_log_interval(max_steps: int, logging_steps: int) -> int:
    """Every how many steps a step line is logged: a multiple of `logging_steps` (the steps the Trainer logs at) that
    keeps a run near `STEP_LINES` lines (the `cpu` preset's 201 steps logged every 5 were 40 of a demo log's 300)."""
    logging_steps = max(int(logging_steps), 1)
    return logging_steps * max(1, math.ceil(max_steps / (STEP_LINES * logging_steps)))


def step_log_callback() -> Any:
    """Off a terminal: a log line every few logged steps (`step_log_interval`: step, loss, reward accuracy, pace, time
    left), the last one always, and one per evaluation, instead of a progress bar that would write a new line per
    update."""

    class StepLog(TrainerCallback):
        def __init__(self) -> None:
            self.began = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.began = time.perf_counter()
            if state.is_world_process_zero:
                logger.info("training: %d steps", state.max_steps)

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs or not state.global_step:
                return
            if "loss" in logs:
                every = step_log_interval(state.max_steps, getattr(args, "logging_steps", 1))
                if state.global_step % every and state.global_step not in (1, state.max_steps):
                    return
                pace = (time.perf_counter() - self.began) / state.global_step
                accuracy = f", reward accuracy {logs['rewards/accuracies']:.2f}" if "rewards/accuracies" in logs else ""
                logger.info("step %d/%d (%.0f%%): loss %.3f%s, %.1f s/step, about %.0f min left", state.global_step, state.max_steps,
                            100 * state.global_step / max(state.max_steps, 1), logs["loss"], accuracy, pace,
                            pace * (state.max_steps - state.global_step) / 60)
            elif any(key.startswith("eval_") for key in logs):
                logger.info("eval at step %d: %s", state.global_step, eval_summary(logs))

    return StepLog()


class FreedPagesBound(TrainerCallback):
    """After every step, jemalloc's freed pages handed back once they exceed their limit (`bound_freed_pages`)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        bound_freed_pages()


def pick_score(metrics: dict[str, Any]) -> float:
    """What the best checkpoint maximizes: the mean of widget and fixture accuracy under constrained decoding."""
    return (metrics["widget_accuracy"] + metrics["fixture_accuracy"]) / 2


def pick_tolerance(n_questions: int) -> float:
    """One question's worth of `pick_score` on `n_questions`: one widget or one fixture answer more or fewer right.

    Checks this close are told apart by a single question: on 23 questions, demo-X and demo-Y (AVX2-only CPU) kept the
    step-48 adapter over the last one (step 99 one fixture answer lower, step 94 one question lower), and demo-Y's
    step-94 adapter then measured 10 points higher on the natural set's widget accuracy (0.399 against 0.297)."""
    return 1 / (2 * n_questions) if n_questions else 0.0


class AdapterAverage:
    """The running mean of the trainable (adapter) weights over the steps it is given: stochastic weight averaging with
    torch's own update (`torch.optim.swa_utils.get_swa_multi_avg_fn`), over the adapter's weights only, not the frozen
    base's."""

    def __init__(self) -> None:
        from torch.optim.swa_utils import get_swa_multi_avg_fn

        self._update = get_swa_multi_avg_fn()
        self.means: list[Any] | None = None
        self.count = 0
        self.first_step: int | None = None
        self.last_step: int | None = None

    @staticmethod
    def _weights(model: Any) -> list[Any]:
        return [p for p in model.parameters() if p.requires_grad]

    def add(self, model: Any, step: int) -> None:
        weights = [w.detach() for w in self._weights(model)]
        if self.means is None:
            self.means, self.first_step = [w.clone() for w in weights], step
        else:
            self._update(self.means, weights, self.count)
        self.count += 1
        self.last_step = step

    @contextlib.contextmanager
    def swapped_in(self, model: Any) -> Iterator[None]:
        """The model holds the mean weights inside the block and its own again after it."""
        import torch

        weights = self._weights(model)
        own = [w.detach().clone() for w in weights]
        with torch.no_grad():
            for weight, mean in zip(weights, self.means):
                weight.copy_(mean)
        try:
            yield
        finally:
            with torch.no_grad():
                for weight, kept in zip(weights, own):
                    weight.copy_(kept)


def constrained_pick_metrics(model: Any, tokenizer: Any, evalset: EvalSet, max_new_tokens: int = ANSWER_TOKEN_LIMIT,
                             bf16: bool = False) -> dict[str, Any]:
    """`generation_metrics` of the model in training's constrained answers to `evalset`'s cases (as `evaluate_model`
    asks them); a model in training mode is left in it."""
    was_training = model.training
    backend = TorchBackend("training", model, tokenizer, bf16_autocast=bf16)
    answers = backend.generate([c.prompt_ids for c in evalset.cases], max_new_tokens, [c.schema for c in evalset.cases])
    if was_training:
        model.train()
    return generation_metrics(answers, evalset.cases, evalset.catalog)


class BestPickCallback(TrainerCallback):
    def __init__(self, evalset: EvalSet, tokenizer: Any, metrics_path: Path | None = None, max_new_tokens: int = ANSWER_TOKEN_LIMIT,
                 average_from: float = 0.0):
        self.evalset, self.tokenizer, self.metrics_path, self.max_new_tokens = evalset, tokenizer, metrics_path, max_new_tokens
        self.average_from = average_from  # share of the steps after which the adapter's weights are averaged (0: never)
        self.average: AdapterAverage | None = None
        self.kept_average = False
        self.best_score: float | None = None  # the kept adapter's score, within `pick_tolerance` of `highest_score`
        self.best_step: int | None = None
        self.highest_score: float | None = None
        self.best_state: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.ended = False

    def score(self, model: Any, bf16: bool = False) -> dict[str, Any]:
        return constrained_pick_metrics(model, self.tokenizer, self.evalset, self.max_new_tokens, bf16)

    def _check(self, model: Any, step: int, args: Any, averaged: str = "") -> None:
        """Scores the model's picks now and keeps its adapter when within one question of the best. `averaged` names
        the steps whose mean the model holds, when it holds one."""
        from peft import get_peft_model_state_dict

        began = time.perf_counter()
        metrics = self.score(model, bool(getattr(args, "bf16", False)))  # generate as the model trains
        score = pick_score(metrics)
        record = {"step": step, "pick/widget_accuracy": metrics["widget_accuracy"], "pick/fixture_accuracy": metrics["fixture_accuracy"],
                  "pick/score": score, "pick/seconds": round(time.perf_counter() - began, 1)}
        if averaged:
            record["pick/averaged_steps"] = averaged
        self.history.append(record)
        if self.metrics_path is not None:
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({**record, "time": time.time()}) + "\n")
        improved = self.highest_score is None or score > self.highest_score
        if improved:
            self.highest_score = score
        kept = score >= self.highest_score - pick_tolerance(metrics.get("n_scenarios", 0)) - 1e-9
        note = " (best so far)" if improved else f" (kept: within one question of the best, {self.highest_score:.3f})" if kept else ""
        what = f"the mean adapter of steps {averaged}" if averaged else f"step {step}"
        logger.info("Held-out picks at %s (constrained): widget %.3f, fixture %.3f%s", what,
                    metrics["widget_accuracy"], metrics["fixture_accuracy"], note)
        if kept:
            self.best_score, self.best_step, self.kept_average = score, step, bool(averaged)
            self.best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.average_from and model is not None and state.global_step > self.average_from * state.max_steps:
            if self.average is None:
                self.average = AdapterAverage()
            self.average.add(model, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # After training, an evaluation of the kept (maybe earlier) adapter is for preference metrics, not a new pick score.
        if model is not None and state.is_world_process_zero and not self.ended:
            self._check(model, state.global_step, args)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        from peft import set_peft_model_state_dict

        self.ended = True
        if model is None:
            return
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._check(model, state.global_step, args)
        if self.average is not None and self.average.count > 1:
            with self.average.swapped_in(model):
                self._check(model, state.global_step, args, averaged=f"{self.average.first_step}-{self.average.last_step}")
        if self.kept_average:
            set_peft_model_state_dict(model, self.best_state)
            logger.info("Keeping the mean adapter of steps %d-%d (held-out pick score %.3f).", self.average.first_step,
                        self.average.last_step, self.best_score)
        elif self.best_state is not None and self.best_step != state.global_step:
            set_peft_model_state_dict(model, self.best_state)
            logger.info("Keeping the adapter of step %d (held-out pick score %.3f) instead of the last step's.", self.best_step, self.best_score)

    def summary(self) -> dict[str, Any]:
        summary = {"best_step": self.best_step, "best_pick_score": self.best_score, "highest_pick_score": self.highest_score,
                   "history": self.history}
        if self.average is not None:
            summary["averaged_steps"] = [self.average.first_step, self.average.last_step]
            summary["kept_average"] = self.kept_average
        return summary
