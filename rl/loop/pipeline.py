"""Orchestration above the stations: a training run followed by its export (`train_dpo --export`).

`rl.training` and `rl.export` never import each other; what chains them lives in `rl.loop` (here and in the online
learner's stages).
"""
from __future__ import annotations

from typing import Any

from rl.core.config import TrainingConfig
from rl.training.run import RunResult, run_training


def train_then_export(config: TrainingConfig, data: dict[str, Any], *, export: dict[str, Any] | None = None,
                      **run_options: Any) -> RunResult:
    """Train one run; if it succeeded and `export` is given ({"quantization", "register"}), export its adapter."""
    result = run_training(config, data, **run_options)
    if export is not None and result.status == "succeeded" and result.is_main_process:
        from rl.deploy.registration import export_and_register

        result.export = export_and_register(result.run_dir, quantization=export["quantization"], register=export["register"]).as_dict()
    return result
