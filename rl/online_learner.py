"""The online learner: retrains from new feedback when enough has arrived, and deploys only what beats the live model.

    learner = init_online_learner(min_samples=100)
    learner.add_feedback({"entry_id": "abc123", "rating": "up", "tags": ["good"], "notes": "Perfect widget choice"})
    learner.get_status()        # {"buffer_size": 45, "min_samples": 100, "should_retrain": False, ...}
    if learner.should_retrain():
        learner.trigger_retrain()

The buffer is read from the database: the usable ratings (trusted rater, not tagged low_confidence) last updated
after the watermark of the newest online run that finished training. Nothing is deleted to empty it; a run moves the
watermark. A run trains on ALL usable ratings up to its watermark, earlier ones included (see docs/online-learning.md).

One run at a time: a run is claimed by inserting an OnlineRun row in state `running`, which a conditional unique
constraint allows only once; a second claim fails in the database, not on a lock file. A running run records a
heartbeat; one whose heartbeat is older than `stale_after_minutes` is taken for dead and marked failed by the next tick.
Stages: train -> evaluate -> gate -> export -> deploy, one log line each.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from rl.config import OnlineLearningConfig, is_adapter_folder, online_learning_config

logger = logging.getLogger(__name__)

FEEDBACK_FIELDS = ("entry_id", "rating", "tags", "notes", "corrected_widget", "corrected_fixtures")
DEFAULT_FEEDBACK_USER = "command-center"


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


class _Heartbeat:
    """Writes `heartbeat_at` of a running OnlineRun every few seconds from a background thread."""

    def __init__(self, run_id: int, seconds: float):
        self.run_id, self.seconds = run_id, seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"online-run-{run_id}-heartbeat", daemon=True)

    def _beat(self) -> None:
        from rl.models import OnlineRun

        try:
            while not self.stopped.wait(self.seconds):
                try:
                    OnlineRun.objects.filter(pk=self.run_id, status=OnlineRun.Status.RUNNING).update(heartbeat_at=timezone.now())
                except Exception as exc:  # a missed beat is not fatal; many in a row make the run look dead
                    logger.warning("Heartbeat of online run %s not written: %s", self.run_id, exc)
        finally:
            connection.close()

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


class OnlineLearner:
    def __init__(self, config: OnlineLearningConfig | None = None):
        self.config = config or online_learning_config()

    # ----- feedback ----------------------------------------------------------------------------------------------
    def add_feedback(self, feedback: Mapping[str, Any], rater: Any = None) -> Any:
        """Store a rating through the same rules and service as the API; bad input raises FeedbackValidationError
        naming the field, and stores nothing. `rater`: a user or username (default: the production app's account,
        setting RL_FEEDBACK_USER)."""
        from django.contrib.auth import get_user_model

        from feedback.models import Entry
        from feedback.services import rating_submit
        from feedback.validation import FeedbackValidationError, clean_rating

        if not isinstance(feedback, Mapping):
            raise FeedbackValidationError("feedback", f"must be a mapping with {', '.join(FEEDBACK_FIELDS[:4])}, got {type(feedback).__name__}")
        unknown = sorted(set(feedback) - set(FEEDBACK_FIELDS))
        if unknown:
            raise FeedbackValidationError(unknown[0], f"unknown field; expected some of {', '.join(FEEDBACK_FIELDS)}")
        entry_id = feedback.get("entry_id")
        if not isinstance(entry_id, str) or not entry_id:
            raise FeedbackValidationError("entry_id", f"must be an entry's id, got {entry_id!r}")
        entry = Entry.objects.filter(external_id=entry_id).first()
        if entry is None:
            raise FeedbackValidationError("entry_id", f"no entry with id {entry_id!r}")
        rating_input = clean_rating(feedback.get("rating"), feedback.get("tags"), feedback.get("notes"),
                                    feedback.get("corrected_widget"), feedback.get("corrected_fixtures"))
        with transaction.atomic():
            if rater is None or isinstance(rater, str):
                username = rater or getattr(settings, "RL_FEEDBACK_USER", DEFAULT_FEEDBACK_USER)
                rater, _ = get_user_model().objects.get_or_create(username=username)
            rating, _ = rating_submit(entry=entry, rater=rater, rating_input=rating_input)
        return rating

    # ----- the buffer --------------------------------------------------------------------------------------------
    def watermark(self) -> datetime | None:
        """The newest rating time any online run has trained up to; ratings after it are the buffer."""
        return trained_watermark()

    def buffer_times(self, until: datetime | None = None) -> list[datetime]:
        """`updated_at` of every usable rating in the buffer (up to `until`), oldest first."""
        from feedback.models import Rating
        from feedback.validation import LOW_CONFIDENCE_TAG

        ratings = Rating.objects.exclude(rater__rater_profile__trusted=False)
        watermark = self.watermark()
        if watermark is not None:
            ratings = ratings.filter(updated_at__gt=watermark)
        if until is not None:
            ratings = ratings.filter(updated_at__lte=until)
        # tags is a JSON list; SQLite has no JSON `contains`, so the low-confidence filter runs here.
        return [updated for updated, tags in ratings.order_by("updated_at").values_list("updated_at", "tags") if LOW_CONFIDENCE_TAG not in (tags or [])]

    def buffer_size(self) -> int:
        return len(self.buffer_times())

    def last_trained_run(self) -> Any:
        from rl.models import OnlineRun

        return OnlineRun.objects.filter(trained_at__isnull=False).order_by("-trained_at").first()

    def next_due(self) -> datetime | None:
        last = self.last_trained_run()
        return last.trained_at + timedelta(hours=self.config.retrain_interval_hours) if last else None

    def due_reason(self, buffer_size: int | None = None) -> str | None:
        """Why a retrain is due now, or None."""
        size = self.buffer_size() if buffer_size is None else buffer_size
        if size >= self.config.min_samples_to_retrain:
            return f"{size} new usable ratings >= min_samples_to_retrain {self.config.min_samples_to_retrain}"
        due = self.next_due()
        if size and due is not None and timezone.now() >= due:
            return f"{size} new usable ratings and {self.config.retrain_interval_hours:g} h since the last run"
        return None

    def should_retrain(self) -> bool:
        return enabled() and self.due_reason() is not None

    def get_status(self) -> dict[str, Any]:
        from rl.models import ModelVersion, OnlineRun
        from rl.registry import live_version

        size = self.buffer_size()
        last = OnlineRun.objects.exclude(status=OnlineRun.Status.RUNNING).first()
        running = OnlineRun.objects.filter(status=OnlineRun.Status.RUNNING).first()
        live = live_version()
        due = self.next_due()
        reason = self.due_reason(size)
        return {
            "enabled": enabled(),
            "buffer_size": size,
            "min_samples": self.config.min_samples_to_retrain,
            "max_buffer_size": self.config.max_buffer_size,
            "should_retrain": enabled() and reason is not None,
            "due_reason": reason,
            "watermark": _iso(self.watermark()),
            "last_run": _describe_run(last),
            "running": _describe_run(running),
            "next_due": _iso(due),
            "active_model": live.ollama_name if live else None,
            "live_alias": self.config.live_alias,
            "pending_deploy": [v.ollama_name for v in ModelVersion.objects.filter(pending_deploy=True)],
            "auto_export": self.config.auto_export,
            "auto_deploy": self.config.auto_deploy,
        }

    # ----- the cron tick -----------------------------------------------------------------------------------------
    def tick(self, *, force: bool = False, dry_run: bool = False, force_deploy: str = "") -> TickResult:
        """What cron runs: deploy a pending candidate, then retrain if due (or `force`d by a person). `force_deploy`
        (the name of the person asking; never for cron) deploys the candidate even when its gate rejects it."""
        if dry_run:
            return self._dry_run(force)
        if not enabled() and not force:
            return TickResult("disabled", "Online learning is off (ENABLE_ONLINE_LEARNING=false): nothing to do.")
        pending = self.deploy_pending()
        if pending is not None and pending.exit_code != ExitCode.OK:
            return pending
        size = self.buffer_size()
        reason = self.due_reason(size)
        if reason is None and not force:
            due = self.next_due()
            return TickResult("nothing_due", f"No retrain due: {size} new usable ratings (need {self.config.min_samples_to_retrain}"
                                             f"{f', or any after {_iso(due)}' if due else ''}).")
        return self.trigger_retrain(force=force, reason=reason or "forced by a person (--force)", force_deploy=force_deploy)

    def _dry_run(self, force: bool) -> TickResult:
        from rl.models import ModelVersion
        from rl.registry import live_version

        size = self.buffer_size()
        reason = self.due_reason(size)
        pending = list(ModelVersion.objects.filter(pending_deploy=True))
        live = live_version()
        lines = [] if enabled() or force else ["online learning is off (ENABLE_ONLINE_LEARNING=false): a tick would do nothing"]
        lines += [f"buffer: {size} new usable ratings (min {self.config.min_samples_to_retrain}, max per run {self.config.max_buffer_size})",
                 f"live model: {live.ollama_name if live else 'none (candidates are gated against the base model)'}"]
        if pending:
            lines.append(f"would first deploy pending: {', '.join(v.ollama_name for v in pending)}")
        if reason or force:
            lines.append(f"would retrain ({reason or 'forced'}) with preset {self.config.preset}, gate on {self.config.gate_sets}, "
                         f"then {'export' if self.config.auto_export else 'stop'}{' and deploy' if self.config.auto_deploy else ''}")
        else:
            lines.append("would do nothing: no retrain due")
        return TickResult("dry_run", "\n".join(lines))

    def reap_stale_runs(self) -> list[int]:
        """Mark running runs whose heartbeat stopped as failed (their process died); returns their ids."""
        from rl.models import OnlineRun, TrainingRun

        cutoff = timezone.now() - timedelta(minutes=self.config.stale_after_minutes)
        stale = list(OnlineRun.objects.filter(status=OnlineRun.Status.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", "heartbeat_at", "training_run"))
        reaped = []
        for pk, heartbeat, training_run in stale:
            message = f"No heartbeat since {heartbeat.isoformat()} (over {self.config.stale_after_minutes:g} min): its process died."
            if OnlineRun.objects.filter(pk=pk, status=OnlineRun.Status.RUNNING, heartbeat_at=heartbeat).update(
                    status=OnlineRun.Status.FAILED, error=message, finished_at=timezone.now()):
                logger.warning("online run %s: marked failed: %s", pk, message)
                TrainingRun.objects.filter(pk=training_run, status=TrainingRun.Status.RUNNING).update(
                    status=TrainingRun.Status.FAILED, error=message, finished_at=timezone.now())
                reaped.append(pk)
        return reaped

    def _claim(self, *, forced: bool) -> tuple[Any, str]:
        """Insert this process's running OnlineRun, or (None, why not) when another run holds the claim."""
        from rl.models import OnlineRun

        self.reap_stale_runs()
        now = timezone.now()
        times = self.buffer_times(until=now)
        watermark = times[self.config.max_buffer_size - 1] if len(times) > self.config.max_buffer_size else now
        taken = min(len(times), self.config.max_buffer_size)
        try:
            with transaction.atomic():
                run = OnlineRun.objects.create(watermark=watermark, buffer_size=taken, forced=forced, heartbeat_at=now,
                                               worker=f"{socket.gethostname()}:{os.getpid()}")
        except IntegrityError:
            other = OnlineRun.objects.filter(status=OnlineRun.Status.RUNNING).first()
            return None, (f"Another online run is in progress (run {other.pk} on {other.worker}, stage {other.stage or 'starting'}, "
                          f"heartbeat {_ago(other.heartbeat_at)}): nothing to do." if other else "Another online run just finished.")
        if len(times) > taken:
            logger.info("online run %s: %d new ratings wait; this run takes the oldest %d (max_buffer_size), the rest wait", run.pk, len(times), taken)
        return run, ""

    def trigger_retrain(self, *, force: bool = False, reason: str = "", force_deploy: str = "") -> TickResult:
        """Claim a run and go through its stages; never raises for a failed stage (the run records it)."""
        from rl.models import OnlineRun

        run, busy = self._claim(forced=force)
        if run is None:
            logger.info(busy)
            return TickResult("busy", busy)
        logger.info("online run %s: claimed (%s); takes %d new usable ratings, up to %s", run.pk, reason or "due", run.buffer_size, run.watermark.isoformat())
        try:
            with _Heartbeat(run.pk, self.config.heartbeat_seconds):
                result = _OnlineRunStages(self.config, run, force_deploy).execute()
        except RunLost as exc:
            logger.error("online run %s: %s", run.pk, exc)
            return TickResult("failed", str(exc), ExitCode.FAILED, run.pk)
        except Exception as exc:
            logger.exception("online run %s: stage %s failed", run.pk, run.stage)
            OnlineRun.objects.filter(pk=run.pk, status=OnlineRun.Status.RUNNING).update(
                status=OnlineRun.Status.FAILED, error=f"stage {run.stage}: {type(exc).__name__}: {exc}", finished_at=timezone.now())
            return TickResult("failed", f"online run {run.pk}: stage {run.stage} failed: {type(exc).__name__}: {exc}", ExitCode.FAILED, run.pk)
        finally:
            if not connection.in_atomic_block:  # a run takes long; drop a connection the server may have timed out
                close_old_connections()
        return result

    def deploy_pending(self) -> TickResult | None:
        """Deploy the newest candidate that passed its gate while Ollama was down; older pending ones are dropped."""
        from rl.models import ModelVersion
        from rl.ollama_registry import OllamaUnavailable
        from rl.registry import activate

        pending = list(ModelVersion.objects.filter(pending_deploy=True).order_by("-created_at"))
        if not pending:
            return None
        newest, older = pending[0], pending[1:]
        for version in older:
            version.pending_deploy = False
            version.message = f"Not deployed: {newest.ollama_name} passed its gate later."
            version.save(update_fields=["pending_deploy", "message"])
        logger.info("deploy: retrying the pending deployment of %s", newest.ollama_name)
        try:
            activate(newest, by="online_learn", reason="pending deployment: passed its gate while Ollama was down",
                     alias=self.config.live_alias)
        except OllamaUnavailable as exc:
            message = f"deploy: {newest.ollama_name} still pending: {exc}"
            logger.warning(message)
            return TickResult("deploy_pending", message, ExitCode.DEPLOY_PENDING)
        for run in newest.online_runs.all():
            run.outcome = run.Outcome.DEPLOYED
            run.save(update_fields=["outcome"])
        return TickResult("deployed", f"deploy: {newest.ollama_name} is live")


def trained_watermark() -> datetime | None:
    from django.db.models import Max

    from rl.models import OnlineRun

    return OnlineRun.objects.filter(trained_at__isnull=False).aggregate(newest=Max("watermark"))["newest"]


def warm_start_adapter(training: Any) -> str:
    """The live model's adapter folder when it was trained on the base model of `training` and is still on disk;
    "" otherwise."""
    from rl.registry import live_version
    from rl.training_run import recorded_base_model

    live = live_version()
    run = live.training_run if live is not None else None
    if run is None or not is_adapter_folder(run.adapter_dir):
        logger.info("warm start: the live model has no trained adapter on disk; training a fresh adapter")
        return ""
    if run.base_model != recorded_base_model(training):
        logger.info("warm start: the live model (%s) was trained on another base model; training a fresh adapter", run.name)
        return ""
    return run.adapter_dir


class _OnlineRunStages:
    """train -> evaluate -> gate -> export -> deploy for one claimed OnlineRun."""

    def __init__(self, config: OnlineLearningConfig, run: Any, force_deploy: str = ""):
        self.config, self.run, self.force_deploy = config, run, force_deploy

    def _stage(self, name: str, message: str, **fields: Any) -> None:
        from rl.models import OnlineRun

        self.run.stage = name
        for key, value in fields.items():
            setattr(self.run, key, value)
        if not OnlineRun.objects.filter(pk=self.run.pk, status=OnlineRun.Status.RUNNING).update(stage=name, heartbeat_at=timezone.now(), **fields):
            raise RunLost("it was marked failed meanwhile (its heartbeat looked stale); stopping without deploying.")
        logger.info("online run %s: stage %s: %s", self.run.pk, name, message)

    def _finish(self, outcome: str, message: str, exit_code: int = ExitCode.OK, **fields: Any) -> TickResult:
        from rl.models import OnlineRun

        updated = OnlineRun.objects.filter(pk=self.run.pk, status=OnlineRun.Status.RUNNING).update(
            status=OnlineRun.Status.SUCCEEDED, outcome=outcome, finished_at=timezone.now(), **fields)
        if not updated:
            raise RunLost("it was marked failed meanwhile (its heartbeat looked stale).")
        logger.info("online run %s: done: %s", self.run.pk, message)
        return TickResult(outcome, message, exit_code, self.run.pk)

    def execute(self) -> TickResult:
        from rl.config import training_config
        from rl.models import OnlineRun, TrainingRun
        from rl.training_run import run_training

        cfg = self.config
        training = training_config(cfg.preset, algo=cfg.algo)
        if cfg.warm_start and (adapter := warm_start_adapter(training)):
            training = training.replace(init_adapter=adapter, learning_rate=training.learning_rate * cfg.warm_start_learning_rate_scale)
        name = f"online-{self.run.pk}-{timezone.now().strftime('%Y%m%d-%H%M%S')}"
        previous = trained_watermark()
        self._stage("train", f"run {name}, preset {cfg.preset}, algo {cfg.algo}, ratings up to {self.run.watermark.isoformat()}, "
                    f"new since {previous.isoformat() if previous else '(first run)'} first, "
                    f"from {'the live adapter ' + training.init_adapter if training.init_adapter else 'a fresh adapter'}, "
                    f"learning rate {training.learning_rate:g}")
        data = {"source": "db", "data_path": None, "ratings_path": None, "rater": None, "until": self.run.watermark.isoformat(),
                "rated_since": previous.isoformat() if previous else None}
        result = run_training(training, data, preset=cfg.preset, run_name=name)
        training_run = TrainingRun.objects.filter(name=name).first()
        if result.status != TrainingRun.Status.SUCCEEDED:
            OnlineRun.objects.filter(pk=self.run.pk).update(training_run=training_run)
            raise RuntimeError(f"training failed: {result.error}")
        self._stage("evaluate", f"trained {name} ({result.metrics.get('algo')}, train loss {result.metrics.get('train_loss', float('nan')):.4f}); "
                    f"scoring it and the live model on {cfg.gate_sets}", training_run=training_run, trained_at=timezone.now())
        from rl.gating import gate_training_run

        decision, gate = gate_training_run(training_run, cfg)
        verdict = "passed" if decision.passed else "rejected"
        live_label = gate["live_model"]
        self._stage("gate", f"{verdict} against {live_label}: " + "; ".join(decision.reasons), gate=gate)
        if not decision.passed and self.force_deploy:
            logger.warning("online run %s: the gate rejected %s, but %s forces it through (--force-deploy)", self.run.pk, name, self.force_deploy)
            gate = {**gate, "forced_by": self.force_deploy}
            self._stage("gate", f"rejected, deployed anyway: forced by {self.force_deploy}", gate=gate)
        elif not decision.passed:
            return self._finish(OnlineRun.Outcome.REJECTED, f"{name} rejected by its gate; {live_label} stays live")
        if not cfg.auto_export and not self.force_deploy:
            return self._finish(OnlineRun.Outcome.TRAINED, f"{name} passed its gate; auto_export is off, so it is not exported")
        return self._export_and_deploy(training_run, gate)

    def _export_and_deploy(self, training_run: Any, gate: dict[str, Any]) -> TickResult:
        from rl.export import export_to_ollama
        from rl.models import ModelVersion, OnlineRun
        from rl.ollama_registry import OllamaUnavailable
        from rl.registry import activate

        cfg = self.config
        self._stage("export", f"{training_run.name} to {cfg.quantization} GGUF, verified against PyTorch")
        exported = export_to_ollama(training_run.adapter_dir, model_name=f"{cfg.model_name}:{training_run.name}",
                                    quantization=cfg.quantization, register=False, check_pick=cfg.verify_pick)
        version = ModelVersion.objects.get(pk=exported.model_version_id)
        version.gate = gate
        version.save(update_fields=["gate"])
        OnlineRun.objects.filter(pk=self.run.pk).update(model_version=version)
        if version.status == ModelVersion.Status.REJECTED:
            gate = {**gate, "passed": False, "reasons": [*gate["reasons"], f"export verification failed: {version.message}"]}
            return self._finish(OnlineRun.Outcome.REJECTED, f"{version.ollama_name} failed export verification: {version.message}", gate=gate)
        if not cfg.auto_deploy and not self.force_deploy:
            return self._finish(OnlineRun.Outcome.EXPORTED, f"{version.ollama_name} exported and verified; auto_deploy is off "
                                f"(deploy with: manage.py activate_model {version.ollama_name})")
        self._stage("deploy", f"{version.ollama_name} as {cfg.live_alias}")
        try:
            activate(version, by=f"online_learn (forced by {self.force_deploy})" if self.force_deploy else "online_learn",
                     reason="; ".join(gate["reasons"]), alias=cfg.live_alias)
        except OllamaUnavailable as exc:
            version.pending_deploy = True
            version.message = f"Passed its gate; not deployed yet: {exc}"
            version.save(update_fields=["pending_deploy", "message"])
            return self._finish(OnlineRun.Outcome.DEPLOY_PENDING, f"{version.ollama_name} passed its gate but Ollama is down; "
                                "the previous model stays live and a later tick deploys it", ExitCode.DEPLOY_PENDING)
        return self._finish(OnlineRun.Outcome.DEPLOYED, f"{version.ollama_name} is live as {cfg.live_alias}")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _ago(value: datetime) -> str:
    return f"{(timezone.now() - value).total_seconds():.0f} s ago"


def _describe_run(run: Any) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"id": run.pk, "status": run.status, "stage": run.stage, "outcome": run.outcome, "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at), "heartbeat_at": _iso(run.heartbeat_at), "watermark": _iso(run.watermark),
            "training_run": run.training_run.name if run.training_run_id else None, "error": run.error}


def enabled() -> bool:
    return bool(getattr(settings, "ENABLE_ONLINE_LEARNING", False))


_learner: OnlineLearner | None = None


def init_online_learner(min_samples: int | None = None, **overrides: Any) -> OnlineLearner:
    """Make (or remake) the process's learner with these settings on top of Django's RL_ONLINE_LEARNING."""
    global _learner
    if min_samples is not None:
        overrides["min_samples_to_retrain"] = min_samples
        overrides.setdefault("max_buffer_size", max(min_samples, OnlineLearningConfig.max_buffer_size))
    _learner = OnlineLearner(online_learning_config(**overrides))
    return _learner


def get_online_learner() -> OnlineLearner:
    return _learner if _learner is not None else init_online_learner()
