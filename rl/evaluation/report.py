"""The closing summary of a run (what `make demo` prints last): every evaluation recorded for it, base against
adapter against GGUF, one row per set, and the minutes each phase of the job took."""
from __future__ import annotations

from pathlib import Path
from typing import Any

SUMMARY_METRICS = (("widget", "constrained_widget_accuracy"), ("fixture", "constrained_fixture_accuracy"),
                   ("preference", "preference_accuracy"), ("valid", "constrained_valid_pick_rate"))
SET_ORDER = ("held_out", "natural")  # then any other set by name (the natural set's sealed part among them)


def read_phases(path: Path) -> list[tuple[str, float]]:
    """Phase timings written one per line as `<name><TAB><seconds>` (scripts/demo.sh writes them)."""
    phases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, seconds = line.rpartition("\t")
        if name and seconds:
            phases.append((name, float(seconds)))
    return phases


def _cell(metrics: dict[str, Any] | None, key: str) -> str:
    value = (metrics or {}).get(key)
    return "-" if value is None else f"{value:.3f}"


def gguf_evaluation(version: Any, set_name: str) -> dict[str, Any] | None:
    """The set's results of an exported version scored through its GGUF (an export copies the adapter's results to
    the version too; those are not the GGUF's)."""
    result = (version.evaluation or {}).get(set_name)
    if result and result.get("tuned") and str((result.get("models") or {}).get("tuned", "")).startswith("gguf"):
        return result
    return None


def evaluation_rows(run: Any, versions: list[Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(set, model, metrics) for the base and the adapter of every set recorded on the run, and for the GGUF of every
    exported version evaluated on that set."""
    # evaluate_model's results (they name their data); not the gate's score cache kept beside them
    evaluations = {k: v for k, v in (run.evaluation or {}).items() if isinstance(v, dict) and "data" in v and ("tuned" in v or "base" in v)}
    names = [s for s in SET_ORDER if s in evaluations] + sorted(s for s in evaluations if s not in SET_ORDER)
    rows = []
    for name in names:
        result = evaluations[name]
        scored = result.get("tuned") or result.get("base") or {}
        size = scored.get("n_scenarios") or scored.get("constrained_n_scenarios") or "?"
        label = f"{name} ({size} q.)"
        rows += [(label, "base", result.get("base")), (label, "adapter", result.get("tuned"))]
        for version in versions:
            if gguf := gguf_evaluation(version, name):
                rows.append((label, f"GGUF {version.quantization}", gguf["tuned"]))
    return rows


def run_summary(run: Any, phases: list[tuple[str, float]] | None = None) -> str:
    """The tables a person looks for at the end of a job, as text."""
    lines = [f"Summary of {run.name} ({run.status}); pick accuracies under constrained decoding:", ""]
    header = f"{'set':<24}{'model':<12}" + "".join(f"{label:>12}" for label, _ in SUMMARY_METRICS)
    lines.append(header)
    lines.append("-" * len(header))
    versions = list(run.model_versions.all())
    rows = evaluation_rows(run, versions)
    for set_label, model, metrics in rows:
        lines.append(f"{set_label:<24}{model:<12}" + "".join(f"{_cell(metrics, key):>12}" for _, key in SUMMARY_METRICS))
    if not rows:
        lines.append("(no evaluation recorded for this run)")
    gates = [(v.ollama_name, v.gate) for v in versions if v.gate]
    for name, gate in gates:
        lines += ["", f"gate of {name}: {'passed' if gate.get('passed') else 'rejected'}"]
        lines += [f"  {reason}" for reason in gate.get("reasons", [])]
    if phases:
        lines += ["", f"{'phase':<28}{'minutes':>8}"]
        lines += [f"{name:<28}{seconds / 60:>8.1f}" for name, seconds in phases]
        lines.append(f"{'total':<28}{sum(s for _, s in phases) / 60:>8.1f}")
    return "\n".join(lines)
