"""Records of the learning side: training runs (and, from export, model versions)."""
from __future__ import annotations

from django.db import models


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
    created_at = models.DateTimeField(auto_now_add=True)
    registered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["name", "tag", "quantization"], name="one_version_per_name_tag_quantization")]

    def __str__(self) -> str:
        return f"{self.name}:{self.tag} ({self.quantization}, {self.status})"

    @property
    def ollama_name(self) -> str:
        return f"{self.name}:{self.tag}"
