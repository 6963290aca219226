"""The run folder's layout: where a training run keeps its config, metrics, checkpoints, adapter and dataset.

    rl_checkpoints/<run>/config.json      resolved config, data source, dataset stats, library versions, git commit
                         metrics.jsonl    TRL's logged metrics, one JSON object a line
                         checkpoints/     Trainer checkpoints (--resume continues from the newest)
                         final/           the trained adapter and tokenizer
                         dataset/         the exact pairs the run trains on (dataset_kto/ for KTO rows)
                         exports/<quantization>/   GGUF, Modelfile, verification.json
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
DATASET_DIR = "dataset"
KTO_DATASET_DIR = "dataset_kto"
EXPORTS_DIR = "exports"


class CheckpointError(ValueError):
    """No trained adapter where one was named."""


def is_adapter_folder(path: str | Path) -> bool:
    """A trained LoRA adapter's folder (a run's final/): it holds PEFT's adapter_config.json."""
    return bool(str(path)) and (Path(path) / "adapter_config.json").is_file()


def has_run_config(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CONFIG_FILE).is_file()


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's config.json."""
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())


def write_run_config(run_dir: str | Path, record: dict[str, Any]) -> None:
    (Path(run_dir) / CONFIG_FILE).write_text(json.dumps(record, indent=1, default=str))


def resolve_checkpoint(checkpoint: str) -> tuple[Path, dict[str, Any] | None]:
    """An adapter folder (or a run folder, or a run name) and the run's config.json when there is one."""
    candidates = [Path(checkpoint), Path(checkpoint) / FINAL_DIR, Path(settings.RL_CHECKPOINT_DIR) / checkpoint / FINAL_DIR]
    for folder in candidates:
        if is_adapter_folder(folder):
            return folder, read_run_config(folder.parent) if has_run_config(folder.parent) else None
    raise CheckpointError(
        f"No trained adapter at {checkpoint!r}: expected a folder with adapter_config.json (a run's {FINAL_DIR}/), "
        f"a run folder, or a run name under {settings.RL_CHECKPOINT_DIR}."
    )


def recorded_base_model(base_model: str) -> str:
    """The base model as a TrainingRun records it: the configured one, or the default it resolved to."""
    from rl.core.base_model import default_base_model

    return base_model or f"(default) {default_base_model()}"
