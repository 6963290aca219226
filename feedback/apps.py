from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "feedback"
    verbose_name = "Operator feedback"

    def ready(self) -> None:
        from feedback import signals  # noqa: F401  (connects the receivers)
