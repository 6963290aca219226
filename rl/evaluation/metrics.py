"""The metrics of an evaluation, the same for every backend (`rl/evaluation/backends.py`).

- Preference accuracy: the share of held-out pairs where the model gives the human-chosen answer the higher
  log-probability (summed over its tokens; also per token, "normalized"). Ties count as wrong and are reported.
  With a reference model's log-probs (the base), also the implicit DPO reward
  `beta * [(log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)]`: its accuracy (> 0) and mean margin.
- Pick accuracy by generation: greedy answers to each held-out scenario's prompt (rl/core/prompts.py), parsed by
  `rl.core.prompts.parse_pick`, scored against the human's up-rated picks. Twice: free, and constrained to the
  prompt's answer schema (`rl.core.prompts.answer_schema`). Base and tuned are always decoded the same way.
- Readable pick metrics: per-widget precision and recall, the share of answers per predicted widget, and a collapse
  warning when one widget takes more than `COLLAPSE_FACTOR` times its true share.
"""
from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, defaultdict
from typing import Any

from rl.core.prompts import Catalog, PickParseError, parse_pick
from rl.evaluation.backends import DECODINGS, DEFAULT_MAX_NEW_TOKENS, Backend
from rl.evaluation.evalset import EvalSet, GenerationCase

logger = logging.getLogger(__name__)


COLLAPSE_FACTOR = 2.0


def preference_metrics(logps: list[tuple[float, float, int, int]], ref_logps: list[tuple[float, float, int, int]] | None = None,
                       beta: float = 0.1) -> dict[str, Any]:
    if not logps:
        return {"n_pairs": 0}
    wins = sum(c > r for c, r, _, _ in logps)
    ties = sum(c == r for c, r, _, _ in logps)
    normalized = sum(c / max(nc, 1) > r / max(nr, 1) for c, r, nc, nr in logps)
    metrics: dict[str, Any] = {
        "n_pairs": len(logps),
        "preference_accuracy": wins / len(logps),
        "preference_accuracy_normalized": normalized / len(logps),
        "preference_ties": ties,
        "preference_outcomes": [int(c > r) for c, r, _, _ in logps],  # per pair, for paired comparisons
        "mean_logp_chosen": statistics.fmean(c for c, _, _, _ in logps),
        "mean_logp_rejected": statistics.fmean(r for _, r, _, _ in logps),
    }
    if ref_logps is not None:
        margins = [beta * ((c - rc) - (r - rr)) for (c, r, _, _), (rc, rr, _, _) in zip(logps, ref_logps, strict=True)]
        metrics["reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
        metrics["mean_reward_margin"] = statistics.fmean(margins)
        metrics["reward_margin_std"] = statistics.pstdev(margins)
    return metrics


def generation_metrics(answers: list[str], cases: list[GenerationCase], catalog: Catalog) -> dict[str, Any]:
    if not cases:
        return {"n_scenarios": 0}
    valid_json = known_widget = valid_picks = widget_hits = fixture_hits = 0
    outcomes: dict[str, list[int]] = {"widget": [], "fixture": [], "valid": []}  # per case, for paired comparisons
    overlaps: list[float] = []
    failures: Counter = Counter()
    confusion: dict[str, Counter] = defaultdict(Counter)
    for answer, case in zip(answers, cases, strict=True):
        expected_widget = case.expected[0].widget
        try:
            pick = parse_pick(answer, catalog)
        except PickParseError as error:
            failures[error.reason] += 1
            valid_json += error.reason not in ("no_json", "invalid_json")
            known_widget += error.reason == "unknown_fixture"
            confusion[expected_widget][f"<{error.reason}>"] += 1
            overlaps.append(0.0)
            for name in outcomes:
                outcomes[name].append(0)
            continue
        valid_json += 1
        known_widget += 1
        valid_picks += 1
        matches_widget = [p for p in case.expected if p.widget == pick.widget]
        fixture_right = any(set(p.fixtures) == set(pick.fixtures) for p in case.expected)
        widget_hits += bool(matches_widget)
        fixture_hits += fixture_right
        outcomes["widget"].append(int(bool(matches_widget)))
        outcomes["fixture"].append(int(fixture_right))
        outcomes["valid"].append(1)
        overlaps.append(max(len(set(p.fixtures) & set(pick.fixtures)) / len(set(p.fixtures) | set(pick.fixtures)) for p in case.expected))
        confusion[matches_widget[0].widget if matches_widget else expected_widget][pick.widget] += 1
    n = len(cases)
    true_share: Counter = Counter()
    for case in cases:
        widgets = sorted({p.widget for p in case.expected})
        for widget in widgets:
            true_share[widget] += 1 / len(widgets) / n
    predicted = sum(confusion.values(), Counter())
    predicted_share = {widget: count / n for widget, count in sorted(predicted.items())}
    return {
        "n_scenarios": n,
        "valid_json_rate": valid_json / n,
        "known_widget_rate": known_widget / n,
        "valid_pick_rate": valid_picks / n,
        "widget_accuracy": widget_hits / n,
        "fixture_accuracy": fixture_hits / n,
        "fixture_overlap": statistics.fmean(overlaps),
        "parse_failures": dict(failures),
        "widget_confusion": {expected: dict(row) for expected, row in sorted(confusion.items())},
        "per_widget": per_widget_scores(confusion),
        "predicted_share": predicted_share,
        "true_share": {widget: round(share, 4) for widget, share in sorted(true_share.items())},
        "collapse_warnings": widget_collapse(predicted_share, dict(true_share)),
        **{f"{name}_outcomes": values for name, values in outcomes.items()},
    }


def per_widget_scores(confusion: dict[str, Counter]) -> dict[str, dict[str, float]]:
    """Precision and recall of each widget from a confusion table (true widget -> answered widget -> count)."""
    widgets = sorted(set(confusion) | {w for row in confusion.values() for w in row if not w.startswith("<")})
    scores = {}
    for widget in widgets:
        hits = confusion.get(widget, {}).get(widget, 0)
        support = sum(confusion.get(widget, {}).values())
        answered = sum(row.get(widget, 0) for row in confusion.values())
        scores[widget] = {
            "precision": hits / answered if answered else 0.0,
            "recall": hits / support if support else 0.0,
            "support": support,
            "right": hits,
            "answered": answered,
        }
    return scores


def widget_collapse(predicted_share: dict[str, float], true_share: dict[str, float], factor: float = COLLAPSE_FACTOR) -> list[str]:
    """Warnings for widgets answered more than `factor` times as often as they are right: the model collapsing onto them."""
    warnings = []
    for widget, share in sorted(predicted_share.items(), key=lambda item: -item[1]):
        if widget.startswith("<"):  # a parse failure, not a widget
            continue
        expected = true_share.get(widget, 0.0)
        if share > factor * expected:
            warnings.append(f"{widget} is {share:.0%} of answers but right for {expected:.0%} of questions (more than {factor:g}x its share)")
    return warnings


def evaluate_backend(backend: Backend, evalset: EvalSet, *, ref_logps: list | None = None, beta: float = 0.1,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, decodings: tuple[str, ...] = DECODINGS) -> tuple[dict[str, Any], list]:
    """All metrics for one backend; returns them and the raw log-probs (the reference for a tuned model).

    Free-decoding pick metrics are top-level keys (`widget_accuracy`, ...); constrained ones the same keys prefixed
    `constrained_`."""
    started = time.perf_counter()
    logps = backend.answer_logps(evalset.pairs) if evalset.pairs else []
    metrics: dict[str, Any] = {"model": backend.name, **preference_metrics(logps, ref_logps, beta)}
    logger.info("%s: %d pairs scored in %.0f s", backend.name, len(evalset.pairs), time.perf_counter() - started)
    prompts = [c.prompt_ids for c in evalset.cases]
    for decoding in decodings:
        started = time.perf_counter()
        schemas = [c.schema for c in evalset.cases] if decoding == "constrained" else None
        answers = backend.generate(prompts, max_new_tokens, schemas) if evalset.cases else []
        prefix = "constrained_" if decoding == "constrained" else ""
        metrics.update({prefix + k: v for k, v in generation_metrics(answers, evalset.cases, evalset.catalog).items()})
        logger.info("%s: %d questions answered (%s decoding) in %.0f s: widget %.3f, fixture %.3f", backend.name, len(prompts),
                    decoding, time.perf_counter() - started, metrics.get(prefix + "widget_accuracy") or 0.0,
                    metrics.get(prefix + "fixture_accuracy") or 0.0)
        metrics[prefix + "answers"] = [{"scenario_id": c.scenario_id, "answer": a} for c, a in zip(evalset.cases, answers)]
        for warning in metrics.get(prefix + "collapse_warnings", []):
            logger.warning("%s (%s decoding): %s", backend.name, decoding, warning)
    return metrics, logps


PICK_METRICS = ("valid_json_rate", "known_widget_rate", "valid_pick_rate", "widget_accuracy", "fixture_accuracy", "fixture_overlap")
COMPARED = ("preference_accuracy", "preference_accuracy_normalized", "reward_accuracy", "mean_reward_margin",
            *PICK_METRICS, *(f"constrained_{m}" for m in PICK_METRICS))


def comparison_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, base, tuned, difference) for the side-by-side table."""
    base, tuned = results.get("base") or {}, results.get("tuned") or {}

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = []
    for key in COMPARED + ("n_pairs", "n_scenarios"):
        a, b = base.get(key), tuned.get(key)
        if a is None and b is None:
            continue
        diff = f"{b - a:+.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and key not in ("n_pairs", "n_scenarios") else ""
        rows.append((key, fmt(a) if key not in ("n_pairs", "n_scenarios") else str(a or "-"),
                     fmt(b) if key not in ("n_pairs", "n_scenarios") else str(b or "-"), diff))
    return rows
