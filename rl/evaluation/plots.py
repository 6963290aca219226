"""Pictures of an evaluation, written beside its JSON: base against tuned bars, and widget confusion matrices."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_comparison(results: dict[str, Any], path: Path) -> Path | None:
    """Base against tuned, one bar pair per metric, as a PNG beside the JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["preference_accuracy", "valid_json_rate", "widget_accuracy", "fixture_accuracy",
               "constrained_widget_accuracy", "constrained_fixture_accuracy"]
    metrics = [m for m in metrics if any(m in results.get(k, {}) for k in ("base", "tuned"))]
    models = [k for k in ("base", "tuned") if k in results]
    if not models:
        return None
    figure, axis = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(models)
    for offset, key in enumerate(models):
        values = [results[key].get(m) or 0.0 for m in metrics]
        bars = axis.bar([i + offset * width for i in range(len(metrics))], values, width, label=key)
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(metrics))],
                    [m.replace("constrained_", "constr. ").replace("_", " ") for m in metrics], fontsize=7)
    axis.set_ylim(0, 1.1)
    axis.set_title(f"{results['data'].get('set', 'held_out')} evaluation ({results['data'].get('n_pairs')} pairs, "
                   f"{results['data'].get('n_scenarios')} scenarios)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_confusion(results: dict[str, Any], path: Path) -> Path | None:
    """True widget (rows) against answered widget (columns) for base and tuned, under constrained decoding when it ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for key in ("base", "tuned"):
        metrics = results.get(key) or {}
        decoding = "constrained_" if "constrained_widget_confusion" in metrics else ""
        if decoding + "widget_confusion" in metrics:
            panels.append((key, decoding.rstrip("_") or "free", metrics[decoding + "widget_confusion"], metrics.get(decoding + "widget_accuracy")))
    if not panels:
        return None
    labels = sorted({w for _k, _d, table, _a in panels for w in table} | {w for _k, _d, table, _a in panels for row in table.values() for w in row})
    figure, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.6), squeeze=False)
    for axis, (key, decoding, table, accuracy) in zip(axes[0], panels):
        grid = [[table.get(row, {}).get(col, 0) for col in labels] for row in labels]
        axis.imshow(grid, cmap="Blues")
        for i, row in enumerate(grid):
            for j, count in enumerate(row):
                if count:
                    axis.text(j, i, str(count), ha="center", va="center", fontsize=7, color="black" if i != j else "darkred")
        axis.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.set_xlabel("answered widget")
        axis.set_ylabel("right widget")
        axis.set_title(f"{key} ({decoding}): widget accuracy {accuracy or 0:.2f}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
