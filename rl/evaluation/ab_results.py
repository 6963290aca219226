"""How served picks are rated: the up-rate of each model version on its own traffic, with a Wilson interval.

Only usable ratings count (trusted raters, not tagged low_confidence: the same rule as training) of entries a model
version served (Entry.model_version). The dashboard, the admin and the online learner's gate record read these.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

Z_95 = 1.959964


def wilson_interval(ups: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `ups / n` (0, 1 when n is 0). Written out here: the formula is five
    lines, and the statistics libraries that have it (statsmodels) are not otherwise needed."""
    if n <= 0:
        return 0.0, 1.0
    p = ups / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class UpRate:
    model_version: str
    ups: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.ups / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.ups, self.n)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {**asdict(self), "rate": self.rate, "low": low, "high": high}

    def __str__(self) -> str:
        if not self.n:
            return "no ratings yet"
        low, high = self.interval
        return f"{self.rate:.0%} of {self.n} (95% CI {low:.0%} to {high:.0%})"


def up_rates(model_versions: list[str] | None = None, *, since: Any = None) -> dict[str, UpRate]:
    """Up-rate per model version (by name, as entries record it) over usable ratings of the entries it served (`since`:
    only entries served from then on, e.g. since an A/B test began)."""
    from feedback.models import Rating
    from feedback.selectors import usable_ratings

    ratings = Rating.objects.exclude(entry__model_version="")
    if since is not None:
        ratings = ratings.filter(entry__created_at__gte=since)
    if model_versions is not None:
        ratings = ratings.filter(entry__model_version__in=model_versions)
    counts: dict[str, list[int]] = {}
    for version, value in usable_ratings(ratings).values_list("entry__model_version", "value").iterator():
        tally = counts.setdefault(version, [0, 0])
        tally[0] += value == "up"
        tally[1] += 1
    names = model_versions if model_versions is not None else sorted(counts)
    return {name: UpRate(name, *counts.get(name, [0, 0])) for name in names}


def up_rate(model_version: str) -> UpRate:
    return up_rates([model_version])[model_version]
