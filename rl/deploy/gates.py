"""The deploy gate: from two evaluations on the SAME data (candidate, live model) to a decision.

It knows nothing of the serving engine, training or the database; the online learner calls it and records what it
returns. Two rules:
- paired (the default, `gate_decision_paired`): both models answered the same items, so they are compared item by
  item, pooled over the gate sets: the primary metric (constrained widget accuracy) must be better by an exact
  one-sided McNemar test at `alpha`, and fixture accuracy, preference accuracy and the valid-pick rate no worse than
  their margins by a paired bootstrap 95% interval (rl/evaluation/paired.py);
- margins (the old rule, `gate_decision`): on every gate set the candidate's constrained widget accuracy beats the
  live model's by a fixed margin, its fixture and preference accuracy fall no further than their tolerances, and
  enough of its answers parse to a valid pick. Finer than one item on sets of these sizes, so chance decides it
  (bench/gate_calibration.py measures how often).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rl.evaluation.paired import OUTCOME_KEYS

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


@dataclass(frozen=True)
class PairedRule:
    primary: str = "widget"
    alpha: float = 0.05
    margins: dict[str, float] = field(default_factory=lambda: _default_margins())
    confidence: float = 0.95  # of the no-worse checks' two-sided interval; its lower end is a one-sided bound at (1 + confidence) / 2

    @classmethod
    def from_config(cls, config: Any) -> PairedRule:
        return cls(config.gate_primary_metric, config.gate_alpha, _margins_of(config, config.gate_primary_metric))


def _margins_of(config: Any, primary: str) -> dict[str, float]:
    margins = {"widget": config.gate_widget_margin, "fixture": config.gate_fixture_margin,
               "preference": config.gate_preference_margin, "valid": config.gate_valid_margin}
    margins.pop(primary)
    return margins


def _default_margins() -> dict[str, float]:
    """The no-worse margins of the online learner's defaults (rl/core/config.py is where they are set)."""
    from rl.core.config import OnlineLearningConfig

    defaults = OnlineLearningConfig()
    return _margins_of(defaults, defaults.gate_primary_metric)


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str]
    checks: list[GateCheck] = field(default_factory=list)
    thresholds: GateThresholds | PairedRule = field(default_factory=GateThresholds)
    statistics: dict[str, Any] = field(default_factory=dict)  # the paired rule's numbers: discordant counts, p, intervals

    def as_dict(self) -> dict[str, Any]:
        rule = "paired" if isinstance(self.thresholds, PairedRule) else "margins"
        return {"passed": self.passed, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks], "rule": rule,
                "thresholds": asdict(self.thresholds), "statistics": self.statistics}


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


def item_outcomes(metrics: dict[str, Any]) -> dict[str, list[int]]:
    """A set's per-item outcomes by metric; {} when the scores were made before outcomes were kept."""
    if any(OUTCOME_KEYS[name] not in metrics for name in ("widget", "fixture", "valid")):
        return {}
    return {name: list(metrics.get(key) or []) for name, key in OUTCOME_KEYS.items()}


def _pooled(per_set: dict[str, dict[str, list[int]]], metric: str) -> list[int]:
    return [outcome for set_name in sorted(per_set) for outcome in per_set[set_name].get(metric, [])]


def gate_decision_paired(candidate: dict[str, dict[str, list[int]]], live: dict[str, dict[str, list[int]]], rule: PairedRule,
                         *, seed: int = 0) -> GateDecision:
    """The paired rule on per-item outcomes (`item_outcomes` of each gate set, the same items in the same order for both
    models), pooled over the gate sets."""
    from rl.evaluation.paired import mcnemar_one_sided, paired_bootstrap

    if not candidate:
        return GateDecision(False, ["the candidate was scored on no gate set"], [], rule)
    missing = sorted(set(candidate) - set(live))
    if missing or any(not candidate[s] or not live[s] for s in candidate):
        return GateDecision(False, [f"no per-item outcomes of both models on {', '.join(missing) or 'every gate set'}"], [], rule)
    sets = "+".join(sorted(candidate))
    checks, statistics = [], {}
    c, l = _pooled(candidate, rule.primary), _pooled(live, rule.primary)
    if len(c) != len(l) or not c:
        return GateDecision(False, [f"{rule.primary}: the two models were not scored on the same items ({len(c)} and {len(l)})"], [], rule)
    test = mcnemar_one_sided([bool(x) for x in c], [bool(x) for x in l])
    better = test.p_value < rule.alpha
    statistics[rule.primary] = {"test": "mcnemar_exact_one_sided", **test.as_dict(), "alpha": rule.alpha}
    checks.append(GateCheck(sets, f"constrained_{rule.primary}_accuracy", sum(c) / len(c), sum(l) / len(l), rule.alpha, better,
                            f"{rule.primary}: {test.words()} {'<' if better else '>='} {rule.alpha:g}: {'better' if better else 'not shown better'}"))
    for metric, margin in rule.margins.items():
        c, l = _pooled(candidate, metric), _pooled(live, metric)
        if not c and not l:
            continue  # e.g. no preference pairs in these sets
        if len(c) != len(l):
            checks.append(GateCheck(sets, metric, None, None, -margin, False, f"{metric}: the two models were not scored on the same items"))
            continue
        interval = paired_bootstrap(c, l, confidence=rule.confidence, seed=seed)
        no_worse = interval.low > -margin - 1e-12
        statistics[metric] = {"test": "paired_bootstrap_mean_difference", **interval.as_dict(), "margin": margin}
        checks.append(GateCheck(sets, metric, sum(c) / len(c), sum(l) / len(l), -margin, no_worse,
                                f"{metric}: {interval.words(margin)}: {'no worse' if no_worse else 'may be worse'}"))
    failed = [check.reason for check in checks if not check.passed]
    return GateDecision(not failed, failed or [check.reason for check in checks], checks, rule, statistics)


def legacy_decision_on_outcomes(candidate: dict[str, dict[str, list[int]]], live: dict[str, dict[str, list[int]]],
                                thresholds: GateThresholds) -> GateDecision:
    """The margins rule applied to per-item outcomes (their means are the accuracies), for comparing the two rules."""
    def as_metrics(outcomes: dict[str, list[int]]) -> dict[str, Any]:
        mean = {name: (sum(values) / len(values) if values else None) for name, values in outcomes.items()}
        return {WIDGET: mean.get("widget"), FIXTURE: mean.get("fixture"), PREFERENCE: mean.get("preference"),
                VALID: mean.get("valid"), "n_pairs": len(outcomes.get("preference") or [])}

    return gate_decision({s: as_metrics(o) for s, o in candidate.items()}, {s: as_metrics(o) for s, o in live.items()}, thresholds)
