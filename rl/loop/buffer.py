"""The online learner's buffer: the usable ratings given or changed since the newest watermark a run trained up to."""
from __future__ import annotations

from datetime import datetime


def trained_watermark() -> datetime | None:
    """The newest rating time any online run has trained up to; ratings after it are the buffer."""
    from django.db.models import Max

    from rl.models import OnlineRun

    return OnlineRun.objects.filter(trained_at__isnull=False).aggregate(newest=Max("watermark"))["newest"]


def buffer_times(until: datetime | None = None) -> list[datetime]:
    """`updated_at` of every usable rating in the buffer (up to `until`), oldest first."""
    from feedback.selectors import usable_ratings

    ratings = usable_ratings()
    watermark = trained_watermark()
    if watermark is not None:
        ratings = ratings.filter(updated_at__gt=watermark)
    if until is not None:
        ratings = ratings.filter(updated_at__lte=until)
    return list(ratings.order_by("updated_at").values_list("updated_at", flat=True))
