"""How often the deploy gate promotes a candidate that is no better, and how often it promotes one that is (a
benchmark, not a test).

From real per-item outcomes of two models on the gate sets (right or wrong per question for widget, fixture and a
valid pick; per preference pair), this estimates for the old rule (fixed margins on accuracies: widget +0.02,
fixture and preference -0.02) and the paired rule (one-sided exact McNemar on widget at alpha, paired bootstrap
non-inferiority on the others; rl/deploy/gates.py):
  (a) the false-promotion rate when the two are equally good: each item's two outcomes swapped at random;
  (b) the power to promote a candidate truly better by 5 and by 10 points of widget accuracy: on top of (a), that
      share of the items is made right for the candidate where it was wrong;
  (c) how often a candidate 10 points better on widget but --fixture-loss worse on fixture is promoted (the
      no-worse margin's protection);
at the gate sets' sizes today and at larger ones (items resampled with replacement), and the size the paired rule
needs for 80% power at +5 and +10 points.

The outcomes come from a training run's gate scores (its candidate and the model it was gated against), e.g. a
closed-loop workdir:

    .venv/bin/python bench/gate_calibration.py --database /tmp/cl_openai/db.sqlite3 --run online-1-20261201-224253
    .venv/bin/python bench/gate_calibration.py --database /tmp/cl_ab2/db.sqlite3 --run online-2-20261202-031440 \
        --live-run online-1-20261202-023100      # a warm retrain gated against the tuned live model
    .venv/bin/python bench/gate_calibration.py ... --margins fixture=0.05,preference=0.05    # another choice of margins
    .venv/bin/python bench/gate_calibration.py --outcomes outcomes.json     # {"candidate": {set: {metric: [0/1...]}}, "live": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRICS = ("widget", "fixture", "valid", "preference")


def outcomes_from_run(database: str, run_name: str, live_run: str = "") -> tuple[dict, dict]:
    """The candidate's and the live (or base) model's per-item outcomes on each gate set, from the run's gate cache
    (a tuned live model's own scores are in its run's cache, `live_run`, and on its versions when a later gate
    scored it as the live model)."""
    os.environ.update({"DJANGO_SETTINGS_MODULE": "backend.settings", "DATABASE_URL": f"sqlite:///{Path(database).resolve()}"})
    import django

    django.setup()
    from rl.deploy.gates import item_outcomes
    from rl.evaluation.score_cache import RUN_CACHE, VERSION_CACHE
    from rl.models import TrainingRun

    run = TrainingRun.objects.get(name=run_name)
    cache = (run.evaluation or {}).get(RUN_CACHE, {})
    gate = next((v.gate for v in run.model_versions.all() if v.gate), None) or {}
    candidate, live = {}, {}
    live_scores = cache.get("base", {})
    if live_run:
        live_training_run = TrainingRun.objects.get(name=live_run)
        live_scores = dict((live_training_run.evaluation or {}).get(RUN_CACHE, {}).get("candidate", {}))
        for version in live_training_run.model_versions.all():  # scored as the live model by later gates
            live_scores.update((version.evaluation or {}).get(VERSION_CACHE, {}))
    # The sets of the run's latest gate (stored as "gate:<set>"); older scores in the cache are of data since changed.
    latest = [metrics for name, metrics in (run.evaluation or {}).items() if name.startswith("gate:")]
    for key, metrics in cache.get("candidate", {}).items():
        if latest and metrics not in latest:
            continue
        other = live_scores.get(key)
        if other is not None and item_outcomes(metrics) and item_outcomes(other):
            name = f"set-{len(candidate) + 1}"
            candidate[name], live[name] = item_outcomes(metrics), item_outcomes(other)
    if not candidate:
        raise SystemExit(f"{run_name} has no gate scores with per-item outcomes for both models (gate it again: manage.py gate_model). {gate.get('reasons', '')}")
    return candidate, live


def pooled(per_set: dict) -> dict[str, np.ndarray]:
    return {m: np.concatenate([np.asarray(s.get(m, []), dtype=float) for s in per_set.values()]) for m in METRICS}


def swap_at_random(candidate: dict, live: dict, rng: np.random.Generator) -> tuple[dict, dict]:
    """Equal quality: each item's two outcomes exchanged with probability 1/2 (per metric's own items)."""
    c, l = {}, {}
    for m in METRICS:
        swap = rng.random(len(candidate[m])) < 0.5
        c[m] = np.where(swap, live[m], candidate[m])
        l[m] = np.where(swap, candidate[m], live[m])
    return c, l


def resample(candidate: dict, live: dict, scale: float, rng: np.random.Generator) -> tuple[dict, dict]:
    """Items drawn with replacement to `scale` times each metric's count; pairs stay paired."""
    c, l = {}, {}
    for m in METRICS:
        n = len(candidate[m])
        if n == 0:
            c[m], l[m] = candidate[m], live[m]
            continue
        index = rng.integers(0, n, size=max(1, round(n * scale)))
        c[m], l[m] = candidate[m][index], live[m][index]
    return c, l


def shifted(candidate: dict, metric: str, points: float, rng: np.random.Generator) -> dict:
    """The candidate's `metric` moved by `points` of all its items: made right on that many where it was wrong
    (points > 0, a true gain of that size) or wrong where it was right (points < 0, a true loss)."""
    c = dict(candidate)
    outcomes = candidate[metric].copy()
    target = 1 if points > 0 else 0
    movable = np.flatnonzero(outcomes != target)
    flips = min(len(movable), round(abs(points) * len(outcomes)))
    outcomes[rng.choice(movable, size=flips, replace=False)] = target
    c[metric] = outcomes
    return c


def promote_rate(rule, candidate: dict, live: dict, *, scale: float, gain: float, trials: int, seed: int,
                 fixture_loss: float = 0.0) -> float:
    rng = np.random.default_rng(seed)
    promoted = 0
    for trial in range(trials):
        c, l = resample(candidate, live, scale, rng)
        c, l = swap_at_random(c, l, rng)
        if gain:
            c = shifted(c, "widget", gain, rng)
        if fixture_loss:
            c = shifted(c, "fixture", -fixture_loss, rng)
        promoted += rule({"pooled": {m: c[m].tolist() for m in METRICS}}, {"pooled": {m: l[m].tolist() for m in METRICS}}, trial)
    return promoted / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", help="SQLite database of the run (a closed-loop workdir's db.sqlite3)")
    parser.add_argument("--run", help="the training run whose gate scores to use")
    parser.add_argument("--live-run", default="", help="the live model's training run, when --run was gated against a tuned live model")
    parser.add_argument("--outcomes", help="a JSON file of per-item outcomes instead")
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--scales", default="1,2,4,8", help="gate-set sizes as multiples of today's")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--margins", default="", help="the paired rule's no-worse margins instead of its defaults, e.g. "
                        "fixture=0.1,preference=0.06,valid=0.02 (to compare choices; the gate reads the gate_*_margin settings)")
    parser.add_argument("--confidence", type=float, default=0.0, help="the no-worse checks' two-sided interval instead of the default")
    parser.add_argument("--fixture-loss", type=float, default=0.10, help="the last column: how often a candidate +10 widget "
                        "points better but this much worse on fixture is promoted")
    args = parser.parse_args()
    if args.outcomes:
        data = json.loads(Path(args.outcomes).read_text())
        candidate_sets, live_sets = data["candidate"], data["live"]
    else:
        if not (args.database and args.run):
            parser.error("give --database and --run, or --outcomes")
        candidate_sets, live_sets = outcomes_from_run(args.database, args.run, args.live_run)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    from rl.deploy.gates import GateThresholds, PairedRule, gate_decision_paired, legacy_decision_on_outcomes

    candidate, live = pooled(candidate_sets), pooled(live_sets)
    sizes = {m: len(candidate[m]) for m in METRICS}
    paired_rule, legacy = PairedRule(), GateThresholds()
    if args.margins:
        paired_rule = replace(paired_rule, margins={**paired_rule.margins, **{k: float(v) for k, v in (pair.split("=") for pair in args.margins.split(","))}})
    if args.confidence:
        paired_rule = replace(paired_rule, confidence=args.confidence)

    def new(c: dict, l: dict, trial: int) -> bool:
        return gate_decision_paired(c, l, paired_rule, seed=trial).passed

    def old(c: dict, l: dict, trial: int) -> bool:
        return legacy_decision_on_outcomes(c, l, legacy).passed

    print(f"per-item outcomes: {sizes} (pooled over {', '.join(candidate_sets)}); observed widget accuracy "
          f"candidate {candidate['widget'].mean():.3f}, live {live['widget'].mean():.3f}; {args.trials} trials per cell")
    print(f"paired rule: McNemar alpha {paired_rule.alpha}, margins {paired_rule.margins} on a {paired_rule.confidence:.0%} interval; old rule: widget +{legacy.min_widget_gain}, "
          f"fixture/preference -{legacy.fixture_tolerance}/-{legacy.preference_tolerance}, valid >= {legacy.min_valid_rate}")
    print(f"{'rule':<7} {'widget items':>12} {'false promotion':>16} {'power +5':>9} {'power +10':>10} {f'+10 widget, -{args.fixture_loss * 100:.0f} fixture':>24}")
    needed: dict[float, float | None] = {0.05: None, 0.10: None}
    for scale in [float(s) for s in args.scales.split(",")]:
        for name, rule in (("old", old), ("paired", new)):
            null = promote_rate(rule, candidate, live, scale=scale, gain=0.0, trials=args.trials, seed=args.seed)
            powers = [promote_rate(rule, candidate, live, scale=scale, gain=g, trials=args.trials, seed=args.seed + 1) for g in needed]
            traded = promote_rate(rule, candidate, live, scale=scale, gain=0.10, trials=args.trials, seed=args.seed + 2, fixture_loss=args.fixture_loss)
            print(f"{name:<7} {round(sizes['widget'] * scale):>12} {null:>16.1%} {powers[0]:>9.1%} {powers[1]:>10.1%} {traded:>24.1%}")
            if name == "paired":
                for gain, power in zip(needed, powers):
                    if needed[gain] is None and power >= 0.8:
                        needed[gain] = scale
    for gain, scale in needed.items():
        where = f"{round(sizes['widget'] * scale)} widget items ({scale:g}x today's)" if scale else f"more than {args.scales.split(',')[-1]}x today's"
        print(f"80% power at +{gain * 100:.0f} points with the paired rule: {where}")


if __name__ == "__main__":
    main()
