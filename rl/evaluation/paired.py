"""Paired statistics: two models answer the same items, so they are compared item by item rather than by two
accuracies that one or two flipped answers can tip. The deploy gate (rl/deploy/gates.py) and the comparison of a
recipe's seeds with another's (rl/evaluation/seed_comparison.py) use them.

- Is the candidate better on the primary metric? An exact one-sided McNemar test: of the items where exactly one model
  is right (the discordant ones), the candidate's share against one half (scipy's binomial test).
- Is it no worse on the others than a margin? The lower end of a paired bootstrap 95% interval of the mean
  difference (candidate - live) per item, which must lie above -margin (scipy's bootstrap).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Per-item outcomes (1 right, 0 wrong, in the evaluation set's order) in a set's metrics (rl/evaluation/metrics.py
# writes them), by the names the paired comparisons use.
OUTCOME_KEYS = {"widget": "constrained_widget_outcomes", "fixture": "constrained_fixture_outcomes",
                "valid": "constrained_valid_outcomes", "preference": "preference_outcomes"}


@dataclass(frozen=True)
class McNemar:
    candidate_only: int  # items the candidate got right and the live model wrong
    live_only: int  # the reverse
    items: int
    p_value: float

    def words(self) -> str:
        return (f"candidate right where live was wrong on {self.candidate_only} items, the reverse on {self.live_only} "
                f"(of {self.items}): p = {self.p_value:.3g}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_one_sided(candidate: Sequence[bool], live: Sequence[bool]) -> McNemar:
    """Exact one-sided McNemar test that the candidate is right more often than the live model on the same items."""
    from scipy.stats import binomtest

    if len(candidate) != len(live):
        raise ValueError(f"paired outcomes of different lengths: {len(candidate)} and {len(live)}")
    candidate_only = sum(1 for c, l in zip(candidate, live) if c and not l)
    live_only = sum(1 for c, l in zip(candidate, live) if l and not c)
    discordant = candidate_only + live_only
    p_value = binomtest(candidate_only, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
    return McNemar(candidate_only, live_only, len(candidate), float(p_value))


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean of candidate - live per item
    low: float  # the bootstrap interval's ends
    high: float
    items: int
    confidence: float

    def words(self, margin: float) -> str:
        return (f"candidate - live {self.mean:+.3f} on {self.items} items, {self.confidence:.0%} interval "
                f"[{self.low:+.3f}, {self.high:+.3f}], must stay above -{margin:g}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(candidate: Sequence[float], live: Sequence[float], *, confidence: float = 0.95, resamples: int = 5000,
                     seed: int = 0) -> PairedDifference:
    """A percentile bootstrap interval of the mean per-item difference (items resampled together, so pairs stay paired)."""
    import numpy as np
    from scipy.stats import bootstrap

    if len(candidate) != len(live):
        raise ValueError(f"paired outcomes of different lengths: {len(candidate)} and {len(live)}")
    if not candidate:
        return PairedDifference(0.0, 0.0, 0.0, 0, confidence)
    difference = np.asarray(candidate, dtype=float) - np.asarray(live, dtype=float)
    mean = float(difference.mean())
    if np.all(difference == difference[0]):  # no spread: every resample has this mean
        return PairedDifference(mean, mean, mean, len(difference), confidence)
    result = bootstrap((difference,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile",
                       rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return PairedDifference(mean, float(interval.low), float(interval.high), len(difference), confidence)
