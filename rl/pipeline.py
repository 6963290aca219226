"""Orchestration above the stations: a training run followed by its export (`train_dpo --export`).

`training_run` and `export` never import each other; what chains them lives here and in `online_learner`.
"""
from __future__ import annotations

from typing import Any

from rl.config import TrainingConfig
from rl.training_run import RunResult, run_training


def train_then_export(config: TrainingConfig, data: dict[str, Any], *, export: dict[str, Any] | None = None,
                      **run_options: Any) -> RunResult:
    """Train one run; if it succeeded and `export` is given ({"quantization", "register"}), export its adapter."""
    result = run_training(config, data, **run_options)
    if export is not None and result.status == "succeeded" and result.is_main_process:
        from rl.export import export_to_ollama

        result.export = export_to_ollama(result.run_dir, quantization=export["quantization"], register=export["register"]).as_dict()
    return result
