"""One claimed online run through its stages, top to bottom: train -> evaluate -> gate -> export -> deploy."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from rl.core.config import OnlineLearningConfig, training_config
from rl.core.runs import is_adapter_folder, recorded_base_model
from rl.deploy.gating import gate_training_run
from rl.deploy.promote import Outcome, promote
from rl.deploy.registry import live_version
from rl.loop.buffer import trained_watermark
from rl.training.run import run_training

logger = logging.getLogger(__name__)


class ExitCode:
    """What `online_learn` exits with, so cron mail says what happened."""

    OK = 0  # nothing to do, another run in progress, or a run that finished (deployed, exported or rejected by its gate)
    FAILED = 1  # a stage failed; the run is marked failed with its error
    DEPLOY_PENDING = 75  # EX_TEMPFAIL: a candidate passed its gate but Ollama was down; a later tick deploys it


class RunLost(RuntimeError):
    """This run was marked failed by another process (its heartbeat looked stale); it must stop."""


@dataclass
class TickResult:
    action: str
    message: str
    exit_code: int = ExitCode.OK
    run_id: int | None = None


def warm_start_adapter(training: Any) -> str:
    """The live model's adapter folder when it was trained on the base model of `training` and is still on disk;
    "" otherwise."""
    live = live_version()
    run = live.training_run if live is not None else None
    if run is None or not is_adapter_folder(run.adapter_dir):
        logger.info("warm start: the live model has no trained adapter on disk; training a fresh adapter")
        return ""
    if run.base_model != recorded_base_model(training.base_model):
        logger.info("warm start: the live model (%s) was trained on another base model; training a fresh adapter", run.name)
        return ""
    return run.adapter_dir


def enter_stage(run: Any, stage: str, message: str, **fields: Any) -> None:
    if not run.enter_stage(stage, **fields):
        raise RunLost("it was marked failed meanwhile (its heartbeat looked stale); stopping without deploying.")
    logger.info("online run %s: stage %s: %s", run.pk, stage, message)


def finish(run: Any, outcome: str, message: str, exit_code: int = ExitCode.OK, **fields: Any) -> TickResult:
    if not run.finish(outcome, **fields):
        raise RunLost("it was marked failed meanwhile (its heartbeat looked stale).")
    logger.info("online run %s: done: %s", run.pk, message)
    return TickResult(outcome, message, exit_code, run.pk)


def run_stages(cfg: OnlineLearningConfig, run: Any, force_deploy: str = "") -> TickResult:
    """Train on the usable ratings up to the run's watermark (the newly rated first, warm-started from the live
    adapter), score the candidate and the live model on the same gate sets, decide, then export and deploy what passed.
    `force_deploy` (a person's name, never cron's) deploys a candidate its gate rejected, and says so in the record."""
    from rl.models import OnlineRun, TrainingRun

    training = training_config(cfg.preset, algo=cfg.algo)
    if cfg.warm_start and (adapter := warm_start_adapter(training)):
        training = training.replace(init_adapter=adapter, learning_rate=training.learning_rate * cfg.warm_start_learning_rate_scale)
    name = f"online-{run.pk}-{timezone.now().strftime('%Y%m%d-%H%M%S')}"
    previous = trained_watermark()
    enter_stage(run, "train", f"run {name}, preset {cfg.preset}, algo {cfg.algo}, ratings up to {run.watermark.isoformat()}, "
                f"new since {previous.isoformat() if previous else '(first run)'} first, "
                f"from {'the live adapter ' + training.init_adapter if training.init_adapter else 'a fresh adapter'}, "
                f"learning rate {training.learning_rate:g}")
    data = {"source": "db", "data_path": None, "ratings_path": None, "rater": None, "until": run.watermark.isoformat(),
            "rated_since": previous.isoformat() if previous else None}
    result = run_training(training, data, preset=cfg.preset, run_name=name)
    training_run = TrainingRun.objects.filter(name=name).first()
    if result.status != TrainingRun.Status.SUCCEEDED:
        OnlineRun.objects.filter(pk=run.pk).update(training_run=training_run)
        raise RuntimeError(f"training failed: {result.error}")

    enter_stage(run, "evaluate", f"trained {name} ({result.metrics.get('algo')}, train loss {result.metrics.get('train_loss', float('nan')):.4f}); "
                f"scoring it and the live model on {cfg.gate_sets}", training_run=training_run, trained_at=timezone.now())
    decision, gate = gate_training_run(training_run, cfg)

    enter_stage(run, "gate", f"{'passed' if decision.passed else 'rejected'} against {gate['live_model']}: " + "; ".join(decision.reasons), gate=gate)
    if not decision.passed and not force_deploy:
        return finish(run, OnlineRun.Outcome.REJECTED, f"{name} rejected by its gate; {gate['live_model']} stays live")
    if not decision.passed:
        logger.warning("online run %s: the gate rejected %s, but %s forces it through (--force-deploy)", run.pk, name, force_deploy)
        gate = {**gate, "forced_by": force_deploy}
        enter_stage(run, "gate", f"rejected, deployed anyway: forced by {force_deploy}", gate=gate)
    if not cfg.auto_export and not force_deploy:
        return finish(run, OnlineRun.Outcome.TRAINED, f"{name} passed its gate; auto_export is off, so it is not exported")

    enter_stage(run, "export", f"{name} to {cfg.quantization} GGUF, verified against PyTorch")
    exported = promote(training_run, gate, cfg, by="online_learn", deploy=False)
    version = exported.version
    OnlineRun.objects.filter(pk=run.pk).update(model_version=version)
    if exported.outcome == Outcome.REJECTED:
        gate = {**gate, "passed": False, "reasons": [*gate["reasons"], f"export verification failed: {version.message}"]}
        return finish(run, OnlineRun.Outcome.REJECTED, exported.message, gate=gate)
    if not cfg.auto_deploy and not force_deploy:
        return finish(run, OnlineRun.Outcome.EXPORTED, f"{version.ollama_name} exported and verified; auto_deploy is off "
                      f"(deploy with: manage.py activate_model {version.ollama_name})")

    enter_stage(run, "deploy", f"{version.ollama_name} as {cfg.live_alias}")
    deployed = promote(version, gate, cfg, by="online_learn")
    if deployed.outcome == Outcome.PENDING:
        return finish(run, OnlineRun.Outcome.DEPLOY_PENDING, deployed.message, ExitCode.DEPLOY_PENDING)
    if deployed.outcome == Outcome.AB_STARTED:
        return finish(run, OnlineRun.Outcome.AB_STARTED, deployed.message)
    return finish(run, OnlineRun.Outcome.DEPLOYED, deployed.message)
