"""What the staff dashboard (/runs/) shows, gathered from the records: plain data and SVG, no HTTP here."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl import charts

CURVES = {"loss": ("loss", "eval_loss"), "reward accuracy": ("rewards/accuracies", "eval_rewards/accuracies")}
EVALUATION_METRICS = (
    ("constrained widget accuracy", "constrained_widget_accuracy"),
    ("constrained fixture accuracy", "constrained_fixture_accuracy"),
    ("constrained valid picks", "constrained_valid_pick_rate"),
    ("preference accuracy", "preference_accuracy"),
    ("widget accuracy (free)", "widget_accuracy"),
)


def metric_curves(run_dir: str | Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per picture, per metric: (step, value) from a run's metrics.jsonl (train and eval logs)."""
    path = Path(run_dir) / "metrics.jsonl"
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in CURVES}
    if not path.is_file():
        return curves
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            logged = json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
        for picture, keys in CURVES.items():
            for key in keys:
                if isinstance(logged.get(key), (int, float)):
                    curves[picture].setdefault("eval" if key.startswith("eval_") else "train", []).append((logged["step"], logged[key]))
    return curves


@dataclass
class EvaluationView:
    set_name: str
    rows: list[tuple[str, float | None, float | None]]
    warnings: list[str]
    chart: str
    n_scenarios: Any = None
    n_pairs: Any = None


@dataclass
class RunView:
    run: Any
    charts: list[str]
    evaluations: list[EvaluationView] = field(default_factory=list)


def evaluation_views(evaluation: dict[str, Any]) -> list[EvaluationView]:
    """Base against tuned on each evaluation set evaluate_model recorded (held_out, natural, ...)."""
    views = []
    for set_name, results in sorted(evaluation.items()):
        if not isinstance(results, dict) or "tuned" not in results:
            continue  # e.g. the gate's candidate-only scores
        base, tuned = results.get("base") or {}, results.get("tuned") or {}
        rows = [(label, base.get(key), tuned.get(key)) for label, key in EVALUATION_METRICS if base.get(key) is not None or tuned.get(key) is not None]
        warnings = [f"tuned: {w}" for w in tuned.get("constrained_collapse_warnings", []) + tuned.get("collapse_warnings", [])]
        views.append(EvaluationView(set_name, rows, warnings, charts.paired_bars(rows, title=f"{set_name}: base vs tuned"),
                                    tuned.get("n_scenarios") or tuned.get("constrained_n_scenarios"), tuned.get("n_pairs")))
    return views


def training_run_views(limit: int = 10) -> list[RunView]:
    from rl.models import TrainingRun

    views = []
    for run in TrainingRun.objects.all()[:limit]:
        curves = metric_curves(run.run_dir)
        pictures = [charts.line_chart(curves["loss"], title=f"{run.name}: loss"),
                    charts.line_chart(curves["reward accuracy"], title=f"{run.name}: reward accuracy", y_range=(0.0, 1.0))]
        views.append(RunView(run, pictures, evaluation_views(run.evaluation or {})))
    return views


@dataclass
class VersionView:
    version: Any
    live: bool
    up_rate: Any
    gate_passed: bool | None
    gate_reasons: list[str]


def version_views(limit: int = 20) -> list[VersionView]:
    from rl.evaluation.ab_results import up_rates
    from rl.models import ModelVersion

    versions = list(ModelVersion.objects.select_related("training_run")[:limit])
    rates = up_rates([v.ollama_name for v in versions])
    return [VersionView(v, v.status == ModelVersion.Status.ACTIVE, rates[v.ollama_name], (v.gate or {}).get("passed"),
                        list((v.gate or {}).get("reasons", []))) for v in versions]


def up_rate_chart(versions: list[VersionView]) -> str:
    rows = [(v.version.ollama_name, v.up_rate.rate, *v.up_rate.interval, v.up_rate.n, v.live) for v in versions if v.up_rate.n or v.live]
    return charts.interval_chart(rows, title="Up-rate of served picks per model version (95% Wilson interval)")


def dashboard_context() -> dict[str, Any]:
    from rl.core.config import serving_config
    from rl.deploy.ab import candidate_arm
    from rl.loop.online_learner import get_online_learner
    from rl.models import Deployment, OnlineRun

    versions = version_views()
    return {
        "ab_arm": candidate_arm(),
        "deployments": list(Deployment.objects.select_related("version", "previous")[:15]),
        "learner": get_online_learner().get_status(),
        "online_runs": list(OnlineRun.objects.select_related("training_run", "model_version")[:10]),
        "versions": versions,
        "up_rate_chart": up_rate_chart(versions),
        "serving": serving_config(),
        "runs": training_run_views(),
    }
