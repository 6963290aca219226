"""The deploy gate: from two evaluations on the SAME data (candidate, live model) and thresholds to a decision.

It knows nothing of Ollama, training or the database; the online learner calls it and records what it returns.
Every gate set must be passed: the candidate's constrained widget accuracy beats the live model's by the margin, its
constrained fixture accuracy and its preference accuracy fall no further than their tolerances, and enough of its
constrained answers parse to a valid pick.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

WIDGET = "constrained_widget_accuracy"
FIXTURE = "constrained_fixture_accuracy"
PREFERENCE = "preference_accuracy"
VALID = "constrained_valid_pick_rate"


@dataclass(frozen=True)
class GateThresholds:
    min_widget_gain: float = 0.02
    fixture_tolerance: float = 0.02
    preference_tolerance: float = 0.02
    min_valid_rate: float = 0.95

    @classmethod
    def from_config(cls, config: Any) -> GateThresholds:
        return cls(config.gate_min_widget_gain, config.gate_fixture_tolerance, config.gate_preference_tolerance, config.gate_min_valid_rate)


@dataclass
class GateCheck:
    set: str
    metric: str
    candidate: float | None
    live: float | None
    required: float | None
    passed: bool
    reason: str


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str]
    checks: list[GateCheck] = field(default_factory=list)
    thresholds: GateThresholds = field(default_factory=GateThresholds)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks], "thresholds": asdict(self.thresholds)}


def _check(set_name: str, metric: str, candidate: dict, live: dict | None, required: float | None, rule: str) -> GateCheck:
    value = candidate.get(metric)
    live_value = None if live is None else live.get(metric)
    if value is None or required is None:
        return GateCheck(set_name, metric, value, live_value, required, False, f"{set_name}: no {metric} to compare")
    passed = value >= required - 1e-9
    verdict = "ok" if passed else "too low"
    reason = f"{set_name}: {metric} {value:.3f} {'>=' if passed else '<'} {required:.3f} ({rule}): {verdict}"
    return GateCheck(set_name, metric, value, live_value, required, passed, reason)


def gate_decision(candidate: dict[str, dict[str, Any]], live: dict[str, dict[str, Any]], thresholds: GateThresholds) -> GateDecision:
    """`candidate` and `live` map each gate set's name to its metrics (evaluate_backend's keys), scored on the same data."""
    checks: list[GateCheck] = []
    if not candidate:
        return GateDecision(False, ["the candidate was scored on no gate set"], [], thresholds)
    for set_name in sorted(candidate):
        cand, base = candidate[set_name], live.get(set_name)
        if base is None:
            checks.append(GateCheck(set_name, WIDGET, cand.get(WIDGET), None, None, False, f"{set_name}: the live model has no score on this set"))
            continue
        gain, fixture_tol, preference_tol = thresholds.min_widget_gain, thresholds.fixture_tolerance, thresholds.preference_tolerance
        live_widget, live_fixture = base.get(WIDGET), base.get(FIXTURE)
        checks.append(_check(set_name, WIDGET, cand, base, None if live_widget is None else live_widget + gain,
                             f"live {live_widget if live_widget is not None else float('nan'):.3f} + margin {gain:g}"))
        checks.append(_check(set_name, FIXTURE, cand, base, None if live_fixture is None else live_fixture - fixture_tol,
                             f"live {live_fixture if live_fixture is not None else float('nan'):.3f} - tolerance {fixture_tol:g}"))
        if cand.get("n_pairs") and base.get(PREFERENCE) is not None:
            checks.append(_check(set_name, PREFERENCE, cand, base, base[PREFERENCE] - preference_tol,
                                 f"live {base[PREFERENCE]:.3f} - tolerance {preference_tol:g}"))
        checks.append(_check(set_name, VALID, cand, base, thresholds.min_valid_rate, "the valid-answer threshold"))
    failed = [c.reason for c in checks if not c.passed]
    reasons = failed or [c.reason for c in checks]
    return GateDecision(not failed, reasons, checks, thresholds)
