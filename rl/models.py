"""Records of the learning side: training runs, model versions, deployments, and the online learner's runs."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, close_old_connections, connection, models, transaction
from django.db.models import Q
from django.utils import timezone


def replace_broken_connection() -> None:
    """Replace the database connection if it broke (a database restart) or outlived CONN_MAX_AGE: Django does this
    between web requests; the online learner runs for minutes with the database idle between its writes and must ask.
    Not inside a transaction, which the connection carries."""
    if not connection.in_atomic_block:
        close_old_connections()


class TrainingRun(models.Model):
    """One training run; its files live in `run_dir`."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    name = models.CharField(max_length=120, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING, db_index=True)
    preset = models.CharField(max_length=40)
    algo = models.CharField(max_length=8)
    base_model = models.CharField(max_length=500)
    config = models.JSONField(default=dict, help_text="The resolved training config.")
    data_source = models.JSONField(default=dict, help_text="Where the ratings came from and the dataset stats.")
    data_watermark = models.DateTimeField(null=True, blank=True, help_text="The newest rating this run used.")
    metrics = models.JSONField(default=dict, blank=True, help_text="Summary: final train and eval metrics.")
    evaluation = models.JSONField(default=dict, blank=True, help_text="evaluate_model results, when run.")
    run_dir = models.CharField(max_length=500)
    adapter_dir = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["status", "-finished_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def restart(self) -> None:
        """Running again (a resumed run)."""
        self.status, self.error, self.finished_at = self.Status.RUNNING, "", None
        self.save()

    def finish(self, status: str, error: str = "") -> None:
        self.status, self.error, self.finished_at = status, error, timezone.now()
        self.save()


class ModelVersion(models.Model):
    """An exported model: a GGUF and its Modelfile (or, for vLLM, the LoRA adapter itself), maybe registered with the serving engine."""

    class Status(models.TextChoices):
        EXPORTED = "exported", "Exported, not registered"
        REGISTERED = "registered"
        REJECTED = "rejected", "Rejected by verification"
        ACTIVE = "active", "Active in Command Center"
        RETIRED = "retired"

    name = models.CharField(max_length=120, help_text="Ollama model name, e.g. cc-widget-selector.")
    tag = models.CharField(max_length=120, help_text="Ollama tag, by default the training run's name.")
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_versions")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.EXPORTED, db_index=True)
    quantization = models.CharField(max_length=12)
    export_dir = models.CharField(max_length=500)
    gguf_path = models.CharField(max_length=500)
    modelfile_path = models.CharField(max_length=500, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    verification = models.JSONField(default=dict, blank=True)
    evaluation = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True, help_text="Why it is not registered, or what went wrong.")
    ollama_host = models.CharField(max_length=300, blank=True, help_text="The serving engine's address it is (to be) registered at.")
    engine = models.CharField(max_length=16, blank=True, help_text="The serving engine it was registered with: ollama, llama_cpp or vllm.")
    adapter_path = models.CharField(max_length=500, blank=True, help_text="The LoRA adapter folder it was made from (what vLLM serves).")
    gate = models.JSONField(default=dict, blank=True, help_text="The deploy gate's decision on this version: passed, reasons, numbers.")
    ab_share = models.FloatField(default=0.0, help_text="Above 0: an A/B arm answering this share of requests beside the live model (deploy_mode ab).")
    pending_deploy = models.BooleanField(default=False, help_text="Passed its gate but Ollama was down; the next online_learn tick deploys it.")
    created_at = models.DateTimeField(auto_now_add=True)
    registered_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "tag", "quantization"], name="one_version_per_name_tag_quantization"),
            models.UniqueConstraint(fields=["status"], condition=Q(status="active"), name="at_most_one_active_model_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.tag} ({self.quantization}, {self.status})"

    @property
    def ollama_name(self) -> str:
        return f"{self.name}:{self.tag}"

    def mark_pending(self, message: str) -> None:
        """Passed its gate, but the engine was down: a later online_learn tick deploys it."""
        self.pending_deploy, self.message = True, message
        self.save(update_fields=["pending_deploy", "message"])

    def drop_pending(self, message: str) -> None:
        self.pending_deploy, self.message = False, message
        self.save(update_fields=["pending_deploy", "message"])

    def become_active(self) -> ModelVersion | None:
        """Record this version as the live one and the one live before as merely registered; returns that one. Call in a
        transaction: the database allows one active version, so a concurrent activation raises IntegrityError."""
        previous = type(self).objects.select_for_update().filter(status=self.Status.ACTIVE).exclude(pk=self.pk).first()
        if previous is not None:
            previous.status = self.Status.REGISTERED
            previous.save(update_fields=["status"])
        self.status, self.activated_at, self.pending_deploy = self.Status.ACTIVE, timezone.now(), False
        self.save(update_fields=["status", "activated_at", "pending_deploy"])
        return previous


class Deployment(models.Model):
    """One change of the live model: which version the Ollama alias now points at, and which it replaced."""

    class Action(models.TextChoices):
        ACTIVATE = "activate"
        ROLLBACK = "rollback"
        AB_START = "ab_start", "A/B arm started"
        AB_PROMOTE = "ab_promote", "A/B arm promoted to live"
        AB_RETIRE = "ab_retire", "A/B arm retired"

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="deployments")
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=10, choices=Action.choices)
    alias = models.CharField(max_length=240, help_text="The Ollama name Command Center asks, e.g. cc-widget-selector:live.")
    ollama_host = models.CharField(max_length=300)
    by = models.CharField(max_length=150, help_text="Who deployed: a user, or online_learn.")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.version.ollama_name} as {self.alias}"


class OnlineRun(models.Model):
    """One online_learn run: the claim that keeps runs one at a time, its heartbeat, its stages and outcome."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Outcome(models.TextChoices):
        DEPLOYED = "deployed", "Deployed as the live model"
        EXPORTED = "exported", "Passed its gate and exported; auto_deploy is off"
        DEPLOY_PENDING = "deploy_pending", "Passed its gate; Ollama was down, deployed on a later tick"
        REJECTED = "rejected", "Rejected by its gate or by export verification"
        TRAINED = "trained", "Trained and gated; auto_export is off"
        AB_STARTED = "ab_started", "Passed its gate; serving as an A/B arm beside the live model"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING, db_index=True)
    stage = models.CharField(max_length=12, blank=True, help_text="train, evaluate, gate, export or deploy.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    forced = models.BooleanField(default=False)
    watermark = models.DateTimeField(help_text="This run trains on usable ratings updated up to here; newer ones wait for the next run.")
    buffer_size = models.IntegerField(default=0, help_text="New usable ratings this run took in.")
    trained_at = models.DateTimeField(null=True, blank=True, help_text="Set when training finished: from then on its watermark empties the buffer.")
    training_run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="online_runs")
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="online_runs")
    gate = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process that claimed the run.")
    heartbeat_at = models.DateTimeField()
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["status"], condition=Q(status="running"), name="one_online_run_at_a_time")]

    def __str__(self) -> str:
        return f"online run {self.pk} ({self.status}{', ' + self.outcome if self.outcome else ''})"

    @classmethod
    def claim(cls, *, watermark: datetime, buffer_size: int, forced: bool, worker: str) -> OnlineRun | None:
        """This process's running run, or None when another run holds the claim (the database allows one running run)."""
        try:
            with transaction.atomic():
                return cls.objects.create(watermark=watermark, buffer_size=buffer_size, forced=forced, heartbeat_at=timezone.now(),
                                          worker=worker)
        except IntegrityError:
            return None

    @classmethod
    def beat(cls, pk: int) -> None:
        cls.objects.filter(pk=pk, status=cls.Status.RUNNING).update(heartbeat_at=timezone.now())

    def _update_while_running(self, **fields: Any) -> bool:
        """Write `fields` only if this run still holds its claim; False when it was marked failed meanwhile."""
        replace_broken_connection()
        for key, value in fields.items():
            setattr(self, key, value)
        return bool(type(self).objects.filter(pk=self.pk, status=self.Status.RUNNING).update(**fields))

    def enter_stage(self, stage: str, **fields: Any) -> bool:
        return self._update_while_running(stage=stage, heartbeat_at=timezone.now(), **fields)

    def finish(self, outcome: str, **fields: Any) -> bool:
        return self._update_while_running(status=self.Status.SUCCEEDED, outcome=outcome, finished_at=timezone.now(), **fields)

    def fail(self, error: str) -> bool:
        return self._update_while_running(status=self.Status.FAILED, error=error, finished_at=timezone.now())

    @classmethod
    def fail_if_silent_since(cls, pk: int, heartbeat_at: datetime, error: str) -> bool:
        """Mark a running run failed if its heartbeat is still `heartbeat_at` (its process died); False if it beat since."""
        return bool(cls.objects.filter(pk=pk, status=cls.Status.RUNNING, heartbeat_at=heartbeat_at).update(
            status=cls.Status.FAILED, error=error, finished_at=timezone.now()))
