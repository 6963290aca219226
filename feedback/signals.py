"""Every new account gets a RaterProfile, trusted or not as RL_NEW_RATERS_TRUSTED says."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_save
from django.dispatch import receiver

from feedback.models import RaterProfile


@receiver(post_save, sender=get_user_model())
def create_rater_profile(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        RaterProfile.objects.get_or_create(user=instance, defaults={"trusted": getattr(settings, "RL_NEW_RATERS_TRUSTED", True)})
