"""The `rl` Django app."""
from django.apps import AppConfig


class RlConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "rl"
    verbose_name = "Reinforcement learning"

    def ready(self) -> None:
        from rl.core.console import quiet_third_party

        quiet_third_party()
