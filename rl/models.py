"""Records of the learning side: training runs, model versions, deployments, and the online learner's runs."""
from __future__ import annotations

from django.db import models
from django.db.models import Q


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


class ModelVersion(models.Model):
    """An exported model: a GGUF and its Modelfile, verified, maybe registered with Ollama."""

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
    ollama_host = models.CharField(max_length=300, blank=True)
    gate = models.JSONField(default=dict, blank=True, help_text="The deploy gate's decision on this version: passed, reasons, numbers.")
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


class Deployment(models.Model):
    """One change of the live model: which version the Ollama alias now points at, and which it replaced."""

    class Action(models.TextChoices):
        ACTIVATE = "activate"
        ROLLBACK = "rollback"

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
