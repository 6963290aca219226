from django.contrib import admin

from rl.models import ModelVersion, TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "preset", "algo", "base_model", "started_at", "finished_at", "data_watermark")
    list_filter = ("status", "preset", "algo")
    search_fields = ("name", "base_model", "error")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("name", "tag", "quantization", "status", "size_bytes", "created_at", "registered_at")
    list_filter = ("status", "quantization")
    search_fields = ("name", "tag", "sha256", "message")
    readonly_fields = [f.name for f in ModelVersion._meta.fields]
