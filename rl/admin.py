from django.contrib import admin

from rl.models import TrainingRun


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "preset", "algo", "base_model", "started_at", "finished_at", "data_watermark")
    list_filter = ("status", "preset", "algo")
    search_fields = ("name", "base_model", "error")
    readonly_fields = [f.name for f in TrainingRun._meta.fields]
