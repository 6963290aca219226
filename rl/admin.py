"""Django admin for the learning side's records: training runs, model versions with their gate and served up-rate, deployments, online runs."""
from django.contrib import admin

from rl.models import Deployment, ModelVersion, OnlineRun, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "preset", "algo", "base_model", "started_at", "finished_at", "data_watermark")
    list_filter = ("status", "preset", "algo")
    search_fields = ("name", "base_model", "error")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "tag", "quantization", "status", "gate_passed", "served_up_rate", "pending_deploy", "size_bytes", "created_at", "activated_at")
    list_filter = ("status", "quantization", "pending_deploy")
    search_fields = ("name", "tag", "sha256", "message")
    readonly_fields = ["gate_decision", *(f.name for f in ModelVersion._meta.fields)]

    @admin.display(description="gate decision")
    def gate_decision(self, version: ModelVersion) -> str:
        """The gate's rule, verdict and each check in words (discordant counts and p, intervals and margins)."""
        from django.utils.html import format_html, format_html_join

        gate = version.gate or {}
        if not gate:
            return "-"
        checks = format_html_join("", "<li>{}</li>", ((c.get("reason", ""),) for c in gate.get("checks", [])))
        return format_html("{} ({} rule)<ul>{}</ul>", "passed" if gate.get("passed") else "rejected", gate.get("rule", "margins"), checks)

    @admin.display(description="up-rate on served picks")
    def served_up_rate(self, version: ModelVersion) -> str:
        from rl.evaluation.ab_results import up_rate

        return str(up_rate(version.ollama_name))

    @admin.display(boolean=True, description="passed gate")
    def gate_passed(self, version: ModelVersion) -> bool | None:
        return version.gate.get("passed") if version.gate else None


@admin.register(OnlineRun)
class OnlineRunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "stage", "outcome", "buffer_size", "watermark", "training_run", "model_version", "started_at", "heartbeat_at")
    list_filter = ("status", "outcome", "stage")
    search_fields = ("error", "worker", "training_run__name")
    readonly_fields = [f.name for f in OnlineRun._meta.fields]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "version", "previous", "alias", "by")
    list_filter = ("action",)
    search_fields = ("version__tag", "by", "reason")
    readonly_fields = [f.name for f in Deployment._meta.fields]
