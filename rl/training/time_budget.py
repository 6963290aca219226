"""`max_minutes`: training that fits a time budget, with its learning-rate schedule fitted to the steps that fit.

The clock starts when the trainer is made (before the base model loads), so the budget is the `train_dpo` command's.
After each optimizer step the plan is made again from what has been measured: the median seconds of the last steps
(a burst of another process on the CPU slows a few steps, whose lost seconds the clock already counts; a mean had
cut plans on such bursts and re-stretched their schedules, then grown them back), the mean seconds of a
held-out pick check (the best-pick callback's generation, or the Trainer's evaluation), and of what follows the last
step (one more check and the save). When the planned steps no longer fit, the plan shrinks (and grows back, never
beyond the steps first planned, when the measurements allow; before the first check is timed, a cut of a few steps
on its guessed cost waits for it): the run ends at the last step that fits, the checks
move to the same shares of the new length, and the cosine (or linear) schedule is re-stretched to end there, so the
learning rate still decays to its floor instead of being cut off high. Whether a run was shortened, and to how many
steps, is logged and kept in the run's metrics. The best-pick callback then keeps the best adapter of the checks that
ran.
"""
from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from rl.training.distributed import on_main_process

logger = logging.getLogger(__name__)

# Before the first check has been timed, a check is assumed to cost this many steps (the cpu preset's 23-scenario
# pick check and its 16 eval pairs cost 4 to 7 steps of 8 pairs on SmolLM2).
CHECK_COST_IN_STEPS = 5.0
# Steps timed before the first plan, and how many of the last steps set the pace.
MEASURED_STEPS = 3
PACE_WINDOW = 20
# Saving the adapter and the closing evaluation of preference metrics, in steps.
CLOSING_COST_IN_STEPS = 2.0
# Until the first held-out check has been timed, a cut of at most this share of the steps is left to that check's
# plan: on the guessed check cost alone, runs that fit had been cut by a few steps and their schedule re-stretched.
GUESSED_CUT_DEFERRED = 0.05


@dataclass(frozen=True)
class BudgetPlan:
    steps: int  # the last step that fits
    step_seconds: float
    check_seconds: float


def steps_that_fit(*, seconds_left: float, step_seconds: float, check_seconds: float, checks_left: int, done: int) -> int:
    """The last optimizer step that fits in `seconds_left`, after `done` steps, keeping room for `checks_left` more
    held-out checks (the closing one among them) and for the save. At least `done`: a finished step is not undone."""
    room = seconds_left - checks_left * check_seconds - CLOSING_COST_IN_STEPS * step_seconds
    return done + max(0, math.floor(room / step_seconds)) if step_seconds > 0 else done


def checks_after(done: int, total: int, eval_share: float) -> int:
    """How many held-out checks a run of `total` steps still makes after step `done`, checks falling every
    `eval_share` of the run plus one at the end."""
    if eval_share <= 0 or eval_share >= 1:
        return 1
    every = max(1, math.ceil(total * eval_share))
    scheduled = [s for s in range(every, total + 1, every) if s > done]
    return len(scheduled) + (0 if total % every == 0 else 1)


def refit_schedule(scheduler: Any, total_steps: int) -> bool:
    """Re-stretch a transformers warmup-then-decay schedule (`LambdaLR` over a partial with `num_training_steps`) to
    end at `total_steps`; False when the schedule is of another kind and is left as it was."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if not lambdas or not all(isinstance(f, functools.partial) and "num_training_steps" in f.keywords for f in lambdas):
        return False
    scheduler.lr_lambdas = [functools.partial(f.func, *f.args, **{**f.keywords, "num_training_steps": total_steps}) for f in lambdas]
    return True


def _eval_share(args: Any) -> float:
    """The share of the run between held-out checks (`eval_steps` below 1), or 0 when checks fall otherwise."""
    share = getattr(args, "eval_steps", None) or 0
    return share if 0 < share < 1 else 0


class TimeBudgetCallback(TrainerCallback):
    """Ends training within `budget_seconds` of `clock_started` (time.monotonic()), the schedule fitted to it."""

    def __init__(self, budget_seconds: float, clock_started: float, clock: Any = time.monotonic):
        self.budget_seconds, self.clock_started, self.clock = budget_seconds, clock_started, clock
        self.planned_steps: int | None = None
        self.steps: int | None = None
        self.step_seconds: list[float] = []
        self.check_seconds: list[float] = []
        self.schedule_refitted: bool | None = None
        self._step_began = 0.0
        self._step_ended: float | None = None
        self._evaluated = False
        self._last_check = 0
        self._announced_steps: int | None = None

    @property
    def shortened(self) -> bool:
        return self.steps is not None and self.planned_steps is not None and self.steps < self.planned_steps

    def seconds_left(self) -> float:
        return self.budget_seconds - (self.clock() - self.clock_started)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.planned_steps = self.steps = state.max_steps
        logger.info("Time budget: %.1f min for the whole run (%.1f min left at the first step, %d steps planned).",
                    self.budget_seconds / 60, self.seconds_left() / 60, state.max_steps)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_began = self.clock()
        if self._evaluated and self._step_ended is not None:  # a check ran between the last step's end and this one
            self.check_seconds.append(self._step_began - self._step_ended)
        self._evaluated = False

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._evaluated = True
        self._last_check = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, lr_scheduler: Any = None, **kwargs: Any) -> None:
        self._step_ended = self.clock()
        self.step_seconds.append(self._step_ended - self._step_began)
        plan = on_main_process(lambda: self._plan(args, state), share=True)
        if plan is not None and plan.steps != state.max_steps:
            self._apply(plan, args, state, control, lr_scheduler)
        self._schedule_check(args, state, control)

    def _schedule_check(self, args: Any, state: Any, control: Any) -> None:
        """Whether this step ends with a held-out check, in place of the Trainer's `global_step % eval_steps == 0`,
        which, as the plan moves `eval_steps`, checked twice in a row (at 25 of 99 steps, then at 26 of 103) or
        skipped a check (75 was no multiple any more). A check falls at the first multiple of `eval_steps` more than
        half an interval after the last one; the check at the run's end is left to the Trainer."""
        share = _eval_share(args)
        if not share or state.global_step >= state.max_steps:
            return
        every = state.eval_steps
        next_check = (math.floor((self._last_check + every / 2) / every) + 1) * every
        control.should_evaluate = state.global_step >= next_check

    def _apply(self, plan: BudgetPlan, args: Any, state: Any, control: Any, lr_scheduler: Any) -> None:
        previous = state.max_steps
        state.max_steps = plan.steps
        share = _eval_share(args)
        if share:
            state.eval_steps = max(1, math.ceil(plan.steps * share))
        self.steps = plan.steps
        refitted = refit_schedule(lr_scheduler, plan.steps) if lr_scheduler is not None else False
        self.schedule_refitted = refitted if self.schedule_refitted is None else self.schedule_refitted and refitted
        if plan.steps <= state.global_step:
            control.should_training_stop = True
            control.should_evaluate = True
        # Once warned, small later cuts (a step or two as the pace drifts) are only logged at debug level; a plan back
        # at its first length is always logged, or the log would still say the run ends at the warned step.
        if self._announced_steps is None:
            level = logging.WARNING
        elif plan.steps == self.planned_steps != self._announced_steps or \
                abs(self._announced_steps - plan.steps) >= max(2, 0.05 * self._announced_steps):
            level = logging.INFO
        else:
            level = logging.DEBUG
        if level > logging.DEBUG:
            self._announced_steps = plan.steps
        logger.log(
            level, "Time budget: the run now ends at step %d of the %d first planned (was %d): %.1f min left, %.1f s a step, "
            "%.0f s a check%s.", plan.steps, self.planned_steps, previous, self.seconds_left() / 60, plan.step_seconds,
            plan.check_seconds, "; the learning-rate schedule re-stretched to end there" if refitted else "",
        )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.shortened:
            logger.warning("Time budget: the run ended at step %d of the %d planned, %.1f of its %.1f min used; the "
                           "best checked adapter is kept.", state.global_step, self.planned_steps,
                           (self.clock() - self.clock_started) / 60, self.budget_seconds / 60)

    def _plan(self, args: Any, state: Any) -> BudgetPlan | None:
        if len(self.step_seconds) < MEASURED_STEPS:
            # Too soon to plan (the first step pays for warm-up allocations); only stop when time is already out.
            step = self.step_seconds[-1]
            if self.seconds_left() < (1 + CLOSING_COST_IN_STEPS) * step:
                return BudgetPlan(steps=state.global_step, step_seconds=step, check_seconds=0.0)
            return None
        # The pace of the last steps (later batches can be longer than the first ones), by their median: a few steps
        # slowed by a burst of other work cost seconds the clock has counted, and say nothing of the steps to come.
        step = statistics.median(self.step_seconds[1:][-PACE_WINDOW:])
        check = (sum(self.check_seconds) / len(self.check_seconds)) if self.check_seconds else CHECK_COST_IN_STEPS * step
        share = _eval_share(args)
        # The longest run, up to the length first planned (so that a plan cut on early estimates grows back when the
        # measurements allow), whose own checks still fit: shrinking moves the checks, so each length is tried with
        # its own. Fitting the first length's checks instead cut a slow CPU's run to two thirds of what fitted.
        seconds_left, done = self.seconds_left(), state.global_step

        def fits(total: int) -> bool:
            return steps_that_fit(seconds_left=seconds_left, step_seconds=step, check_seconds=check,
                                  checks_left=checks_after(done, total, share), done=done) >= total

        total = next((t for t in range(self.planned_steps or state.max_steps, done, -1) if fits(t)), done)
        if state.global_step >= state.max_steps:  # the run is ending on its own: only a cut can apply
            total = min(total, state.max_steps)
        elif share and not self.check_seconds and 0 < state.max_steps - total <= GUESSED_CUT_DEFERRED * state.max_steps:
            total = state.max_steps
        return BudgetPlan(steps=total, step_seconds=step, check_seconds=check)

    def summary(self) -> dict[str, Any]:
        return {"max_minutes": round(self.budget_seconds / 60, 2), "planned_steps": self.planned_steps, "steps": self.steps,
                "shortened": self.shortened, "schedule_refitted": bool(self.schedule_refitted) if self.shortened else None,
                "minutes_used": round((self.clock() - self.clock_started) / 60, 2)}
