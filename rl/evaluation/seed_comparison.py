"""One recipe's seeds against another's on the same evaluation set: each run's widget and fixture figures, the mean and
the worst seed of each side, the collapse warnings, and the mean per-question difference with a paired bootstrap
interval, the figures docs/training-recipe.md decides its variants by.

Runs are paired by position (the candidate's first run with the baseline's first: give them in the same seed order).
The interval resamples questions, each carrying its mean difference over the seeds, since one question's answers
under different seeds are not independent of each other; it says how much the set's questions could move the
comparison, not how much another five seeds could.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rl.evaluation.paired import OUTCOME_KEYS, PairedDifference, mcnemar_one_sided, paired_bootstrap
from rl.evaluation.report import gguf_evaluation

METRICS = tuple((metric, OUTCOME_KEYS[metric]) for metric in ("widget", "fixture"))
# What must agree between two evaluations for their questions to be the same questions in the same order.
DATA_KEYS = ("set", "split", "limit", "n_scenarios")


class SeedComparisonError(ValueError):
    """The runs cannot be compared as asked (a missing evaluation, different questions, unequal sides)."""


@dataclass(frozen=True)
class SeedScores:
    run: str
    outcomes: dict[str, list[int]]  # metric -> 1 right / 0 wrong per question, in the set's order
    collapse_warnings: list[str]
    data: dict[str, Any]

    def right(self, metric: str) -> int:
        return sum(self.outcomes[metric])

    @property
    def questions(self) -> int:
        return len(self.outcomes["widget"])


def seed_scores(run: Any, set_name: str, quantization: str | None = None) -> SeedScores:
    """A run's per-question outcomes on `set_name` (a set `evaluate_model` recorded for it: held_out, natural, ...),
    of its adapter or, with `quantization`, of its GGUF of that quantization."""
    if quantization is None:
        result = (run.evaluation or {}).get(set_name)
        what = f"run {run.name!r}'s adapter"
    else:
        result = next((r for v in run.model_versions.filter(quantization=quantization) if (r := gguf_evaluation(v, set_name))), None)
        what = f"run {run.name!r}'s {quantization} GGUF"
    tuned = (result or {}).get("tuned") or {}
    if not tuned:
        raise SeedComparisonError(f"{what} has no evaluation on {set_name!r}: run evaluate_model for it first.")
    missing = [key for _, key in METRICS if key not in tuned]
    if missing:
        raise SeedComparisonError(f"{what} on {set_name!r} has no per-question outcomes ({', '.join(missing)}): it was "
                                  "evaluated without constrained decoding or before outcomes were kept; evaluate it again.")
    return SeedScores(run.name, {metric: [int(x) for x in tuned[key]] for metric, key in METRICS},
                      list(tuned.get("constrained_collapse_warnings") or []),
                      {key: (result.get("data") or {}).get(key) for key in DATA_KEYS})


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    candidate_only: int  # (seed, question) pairs right only with the candidate's run of that seed
    baseline_only: int
    difference: PairedDifference  # candidate - baseline per question, averaged over the seeds


@dataclass(frozen=True)
class SeedComparison:
    set_name: str
    model: str
    candidate: list[SeedScores]
    baseline: list[SeedScores]
    metrics: list[MetricComparison]

    def words(self) -> str:
        return "\n".join(_table(self))


def compare_seeds(candidate: list[SeedScores], baseline: list[SeedScores], *, set_name: str, model: str = "adapter",
                  seed: int = 0) -> SeedComparison:
    """Compare two recipes' runs, paired by position, on the same questions."""
    if not candidate or len(candidate) != len(baseline):
        raise SeedComparisonError(f"give as many baseline runs as candidate runs, in the same seed order ({len(candidate)} "
                                  f"and {len(baseline)}).")
    first = candidate[0]
    for scores in candidate + baseline:
        if scores.data != first.data or scores.questions != first.questions:
            raise SeedComparisonError(f"{scores.run} and {first.run} were not evaluated on the same questions "
                                      f"({scores.data}, {scores.questions} questions; {first.data}, {first.questions}).")
    metrics = []
    for metric, _ in METRICS:
        pairs = [(c.outcomes[metric], b.outcomes[metric]) for c, b in zip(candidate, baseline)]
        # only its counts: its p-value would take one question's answers under several seeds for independent items
        discordant = mcnemar_one_sided([bool(x) for c, _ in pairs for x in c], [bool(y) for _, b in pairs for y in b])
        per_question_c = [sum(c[i] for c, _ in pairs) / len(pairs) for i in range(first.questions)]
        per_question_b = [sum(b[i] for _, b in pairs) / len(pairs) for i in range(first.questions)]
        metrics.append(MetricComparison(metric, discordant.candidate_only, discordant.live_only,
                                        paired_bootstrap(per_question_c, per_question_b, seed=seed)))
    return SeedComparison(set_name, model, candidate, baseline, metrics)


def _figure(right: int, total: int) -> str:
    return f"{right / total:.3f} ({right}/{total})" if total else "-"


def _side_rows(label: str, side: list[SeedScores]) -> list[str]:
    rows = [f"{label}:"]
    for scores in side:
        warning = f"  collapse: {'; '.join(scores.collapse_warnings)}" if scores.collapse_warnings else ""
        rows.append(f"  {scores.run:<24}" + "".join(f"{_figure(scores.right(m), scores.questions):>20}" for m, _ in METRICS) + warning)
    total = sum(s.questions for s in side)
    rows.append(f"  {'mean':<24}" + "".join(f"{_figure(sum(s.right(m) for s in side), total):>20}" for m, _ in METRICS))
    rows.append(f"  {'worst seed':<24}" + "".join(f"{min(s.right(m) / s.questions for s in side):>20.3f}" for m, _ in METRICS))
    return rows


def _table(comparison: SeedComparison) -> list[str]:
    n = comparison.candidate[0].questions
    lines = [f"{comparison.set_name} ({n} questions), {comparison.model}, constrained decoding; runs paired by position",
             f"  {'':<24}" + "".join(f"{m:>20}" for m, _ in METRICS)]
    lines += _side_rows("candidate", comparison.candidate) + _side_rows("baseline", comparison.baseline)
    lines.append("")
    for m in comparison.metrics:
        d = m.difference
        lines.append(f"{m.metric}: candidate - baseline {d.mean:+.3f} per question, {d.confidence:.0%} paired bootstrap "
                     f"interval over the questions [{d.low:+.3f}, {d.high:+.3f}]; right only with the candidate on "
                     f"{m.candidate_only} (seed, question) pairs, only with the baseline on {m.baseline_only}")
    return lines
