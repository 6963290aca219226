"""The online learner: retrains from new feedback when enough has arrived, and deploys only what beats the live model.

    learner = init_online_learner(min_samples=100)
    learner.add_feedback({"entry_id": "abc123", "rating": "up", "tags": ["good"], "notes": "Perfect widget choice"})
    learner.get_status()        # {"buffer_size": 45, "min_samples": 100, "should_retrain": False, ...}
    if learner.should_retrain():
        learner.trigger_retrain()

The buffer (`rl/loop/buffer.py`) is read from the database: the usable ratings (`feedback.selectors.usable_ratings`)
last updated after the watermark of the newest online run that finished training. Nothing is deleted to empty it; a
run moves the watermark. A run trains on ALL usable ratings up to its watermark, earlier ones included (see
docs/online-learning.md).

One run at a time: a run is claimed by inserting an OnlineRun row in state `running` (`OnlineRun.claim`), which a
conditional unique constraint allows only once; a second claim fails in the database, not on a lock file. A running
run records a heartbeat; one whose heartbeat is older than `stale_after_minutes` is taken for dead and marked failed
by the next tick. Its stages (`rl/loop/stages.py`): train -> evaluate -> gate -> export -> deploy, one log line each.
"""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from rl.core.config import OnlineLearningConfig, online_learning_config
from rl.deploy.promote import Outcome, promote_pending
from rl.loop.buffer import buffer_times, trained_watermark
from rl.loop.heartbeat import Heartbeat
from rl.loop.stages import ExitCode, RunLost, TickResult, run_stages

logger = logging.getLogger(__name__)

DEFAULT_FEEDBACK_USER = "command-center"


class OnlineLearner:
    def __init__(self, config: OnlineLearningConfig | None = None):
        self.config = config or online_learning_config()

    # ----- feedback ----------------------------------------------------------------------------------------------
    def add_feedback(self, feedback: Mapping[str, Any], rater: Any = None) -> Any:
        """Store a rating through the same service as `POST /api/feedback/`; bad input raises FeedbackValidationError
        naming the field, and stores nothing. `rater`: a user or username (default: the production app's account,
        setting RL_FEEDBACK_USER)."""
        from django.contrib.auth import get_user_model

        from feedback.services import feedback_submit

        with transaction.atomic():
            if rater is None or isinstance(rater, str):
                username = rater or getattr(settings, "RL_FEEDBACK_USER", DEFAULT_FEEDBACK_USER)
                rater, _ = get_user_model().objects.get_or_create(username=username)
            rating, _ = feedback_submit(rater=rater, feedback=feedback)
        return rating

    # ----- the buffer --------------------------------------------------------------------------------------------
    def watermark(self) -> datetime | None:
        """The newest rating time any online run has trained up to; ratings after it are the buffer."""
        return trained_watermark()

    def buffer_times(self, until: datetime | None = None) -> list[datetime]:
        """`updated_at` of every usable rating in the buffer (up to `until`), oldest first."""
        return buffer_times(until)

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
        from rl.deploy.registry import live_version
        from rl.models import ModelVersion, OnlineRun

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
        ab = self.ab_decision()
        if ab is not None:
            return ab
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
        from rl.deploy.registry import live_version
        from rl.models import ModelVersion

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
            if OnlineRun.fail_if_silent_since(pk, heartbeat, message):
                logger.warning("online run %s: marked failed: %s", pk, message)
                for run in TrainingRun.objects.filter(pk=training_run, status=TrainingRun.Status.RUNNING):
                    run.finish(TrainingRun.Status.FAILED, message)
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
        run = OnlineRun.claim(watermark=watermark, buffer_size=taken, forced=forced, worker=f"{socket.gethostname()}:{os.getpid()}")
        if run is None:
            other = OnlineRun.objects.filter(status=OnlineRun.Status.RUNNING).first()
            return None, (f"Another online run is in progress (run {other.pk} on {other.worker}, stage {other.stage or 'starting'}, "
                          f"heartbeat {_ago(other.heartbeat_at)}): nothing to do." if other else "Another online run just finished.")
        if len(times) > taken:
            logger.info("online run %s: %d new ratings wait; this run takes the oldest %d (max_buffer_size), the rest wait", run.pk, len(times), taken)
        return run, ""

    def trigger_retrain(self, *, force: bool = False, reason: str = "", force_deploy: str = "") -> TickResult:
        """Claim a run and go through its stages; never raises for a failed stage (the run records it)."""

        run, busy = self._claim(forced=force)
        if run is None:
            logger.info(busy)
            return TickResult("busy", busy)
        logger.info("online run %s: claimed (%s); takes %d new usable ratings, up to %s", run.pk, reason or "due", run.buffer_size, run.watermark.isoformat())
        try:
            with Heartbeat(run.pk, self.config.heartbeat_seconds):
                result = run_stages(self.config, run, force_deploy)
        except RunLost as exc:
            logger.error("online run %s: %s", run.pk, exc)
            return TickResult("failed", str(exc), ExitCode.FAILED, run.pk)
        except Exception as exc:
            logger.exception("online run %s: stage %s failed", run.pk, run.stage)
            run.fail(f"stage {run.stage}: {type(exc).__name__}: {exc}")
            return TickResult("failed", f"online run {run.pk}: stage {run.stage} failed: {type(exc).__name__}: {exc}", ExitCode.FAILED, run.pk)
        finally:
            if not connection.in_atomic_block:  # a run takes long; drop a connection the server may have timed out
                close_old_connections()
        return result

    def ab_decision(self) -> TickResult | None:
        """With an A/B candidate arm serving: promote it, retire it, or keep waiting for evidence (no retrain meanwhile:
        one candidate at a time). None when no A/B runs."""
        from rl.deploy.ab import decide_ab

        evidence = decide_ab(self.config, by="online_learn")
        if evidence is None:
            return None
        return TickResult(f"ab_{evidence.decision}", evidence.words())

    def deploy_pending(self) -> TickResult | None:
        """Deploy the newest candidate that passed its gate while Ollama was down; older pending ones are dropped."""
        promotion = promote_pending(self.config, by="online_learn")
        if promotion is None:
            return None
        if promotion.outcome == Outcome.PENDING:
            message = f"deploy: {promotion.version.ollama_name} still pending: {promotion.version.message}"
            logger.warning(message)
            return TickResult("deploy_pending", message, ExitCode.DEPLOY_PENDING)
        for run in promotion.version.online_runs.all():
            run.outcome = run.Outcome.DEPLOYED
            run.save(update_fields=["outcome"])
        return TickResult("deployed", f"deploy: {promotion.version.ollama_name} is live")


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
