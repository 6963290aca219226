"""One training run end to end: dataset -> run folder + TrainingRun row -> trainer -> recorded result.

Every artifact of a run lives in its folder (config.json, metrics.jsonl, tensorboard/, checkpoints/, final/), and
the TrainingRun row points at it.
"""
from __future__ import annotations

import importlib.metadata
import logging
import random
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.conf import settings

from rl.core.config import TrainingConfig
from rl.core.runs import (
    DATASET_DIR,
    KTO_DATASET_DIR,
    METRICS_FILE,
    has_run_config,
    read_run_config,
    recorded_base_model,
    write_run_config,
)
from rl.data.dataset_builder import PreparedDataset, build_dataset
from rl.data.dry_run import dump_dataset
from rl.data.snapshot import DatasetError
from rl.training.distributed import on_main_process
from rl.training.policy_negatives import apply_policy_negatives

logger = logging.getLogger(__name__)


LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


@dataclass
class RunResult:
    run_name: str
    run_dir: Path
    status: str
    error: str = ""
    metrics: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    # False on the other processes of a distributed run: they neither record, export nor report it.
    is_main_process: bool = True

    def summary(self) -> list[tuple[str, str]]:
        rows = [("run", self.run_name), ("status", self.status), ("folder", str(self.run_dir))]
        for key, value in (self.metrics or {}).items():
            rows.append((key, f"{value:.4f}" if isinstance(value, float) else str(value)))
        if self.error:
            rows.append(("error", self.error))
        return rows


def save_run_dataset(run_dir: Path, dataset: Any, kto_dataset: Any) -> None:
    """The exact pairs a run trains on, kept in its folder so --resume continues on the same data."""
    dataset.save_to_disk(str(run_dir / DATASET_DIR))
    if kto_dataset is not None:
        kto_dataset.save_to_disk(str(run_dir / KTO_DATASET_DIR))


def load_run_dataset(run_dir: Path) -> tuple[Any, Any]:
    from datasets import DatasetDict

    if not (run_dir / DATASET_DIR).is_dir():
        raise DatasetError(f"Cannot resume: {run_dir} has no saved dataset.")
    kto = DatasetDict.load_from_disk(str(run_dir / KTO_DATASET_DIR)) if (run_dir / KTO_DATASET_DIR).is_dir() else None
    return DatasetDict.load_from_disk(str(run_dir / DATASET_DIR)), kto


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        return ""


def _versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def resolve_run_dir(output_dir: str | None, run_name: str | None, resume: str | None, preset: str, algo: str) -> tuple[str, Path]:
    parent = Path(output_dir) if output_dir else Path(settings.RL_CHECKPOINT_DIR)
    if resume:
        folder = Path(resume) if Path(resume).is_dir() else parent / resume
        if not has_run_config(folder):
            raise DatasetError(f"Cannot resume {resume!r}: no run folder with config.json at {folder}.")
        return folder.name, folder
    name = run_name or f"{preset}-{algo}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    folder = parent / name
    if folder.exists():
        raise DatasetError(f"Run folder {folder} exists already: pick another --run-name, or --resume {name}.")
    from rl.models import TrainingRun

    recorded = TrainingRun.objects.filter(name=name).first()
    if recorded is not None:  # its folder was deleted (or is under another checkpoint directory)
        raise DatasetError(f"A training run named {name!r} is recorded already (status {recorded.status}, no folder at {folder}): "
                           "pick another --run-name.")
    return name, folder


def run_training(
    config: TrainingConfig,
    data: dict[str, Any],
    *,
    preset: str,
    output_dir: str | None = None,
    run_name: str | None = None,
    resume: str | None = None,
    dump_dir: str | None = None,
) -> RunResult:
    """Train one run and record it. Bad input raises before anything is written; a failure during training is
    recorded on the run (status failed, the error) and returned; Ctrl-C records it as interrupted and re-raises."""
    from rl.models import TrainingRun
    from rl.training.trainer import CommandCenterDPOTrainer

    # Under `accelerate launch` every process trains, but only the main one decides the run folder, reads the
    # feedback, writes the folder and the TrainingRun row; the others read the dataset the main one saved.
    name, run_dir = on_main_process(lambda: resolve_run_dir(output_dir, run_name, resume, preset, config.algo), share=True)
    if resume:
        saved = read_run_config(run_dir)
        config = TrainingConfig(**saved["config"])
        data = saved["data"]
    trainer = CommandCenterDPOTrainer(preset, config=config)
    trainer.load_base_model()
    prepared = None
    if resume:
        run = on_main_process(lambda: _mark_running(name))
    else:
        def prepare_run() -> Any:
            nonlocal prepared
            prepared = build_dataset(trainer.config, data, trainer.tokenizer, for_training=True)
            if trainer.config.policy_negatives:
                apply_policy_negatives(prepared, trainer.config, trainer.tokenizer)
            return _start_run(name, run_dir, preset, trainer.config, data, prepared, dump_dir)

        run = on_main_process(prepare_run)
    dataset, kto_dataset = (prepared.dataset, prepared.kto_dataset) if prepared is not None else load_run_dataset(run_dir)
    best_pick = best_pick_callback(trainer.config, prepared, trainer.tokenizer, run_dir) if prepared is not None else None
    confusion = confusion_sampling_callback(trainer.config, prepared, trainer.tokenizer, run_dir) if prepared is not None else None
    try:
        outcome = trainer.train(
            dataset["train"], dataset["eval"], output_dir=run_dir,
            kto_dataset=kto_dataset, resume_from_checkpoint=bool(resume),
            callbacks=[callback for callback in (best_pick, confusion) if callback is not None],
        )
    except KeyboardInterrupt:
        _finish(run, TrainingRun.Status.INTERRUPTED, error=f"Interrupted; continue with: train_dpo --resume {name}")
        raise
    except Exception as exc:
        logger.exception("Run %s failed", name)
        _finish(run, TrainingRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        return RunResult(name, run_dir, TrainingRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}", is_main_process=run is not None)

    metrics = summarize_metrics(outcome)
    if best_pick is not None:
        metrics["best_pick"] = best_pick.summary()
    if run is not None:
        run.algo = outcome.algo
        run.adapter_dir = str(outcome.final_dir)
        run.metrics = metrics
        _finish(run, TrainingRun.Status.SUCCEEDED)
    return RunResult(name, run_dir, TrainingRun.Status.SUCCEEDED, metrics=metrics, is_main_process=run is not None)


def _mark_running(name: str) -> Any:
    from rl.models import TrainingRun

    run = TrainingRun.objects.get(name=name)
    run.restart()
    return run


def _start_run(name: str, run_dir: Path, preset: str, config: TrainingConfig, data: dict[str, Any],
               prepared: PreparedDataset, dump_dir: str | None) -> Any:
    """The run folder (its dataset and config.json) and its TrainingRun row."""
    from rl.models import TrainingRun

    if dump_dir:
        dump_dataset(prepared, dump_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_dataset(run_dir, prepared.dataset, prepared.kto_dataset)
    record = {
        "run": name, "preset": preset, "config": config.to_dict(), "data": data,
        "dataset_stats": prepared.stats.to_dict(), "libraries": _versions(), "git_commit": _git_commit(),
        "created_at": datetime.now(timezone.utc).isoformat(),
    }
    write_run_config(run_dir, record)
    return TrainingRun.objects.create(
        name=name, status=TrainingRun.Status.RUNNING, preset=preset, algo=config.algo,
        base_model=recorded_base_model(config.base_model),
        config=config.to_dict(), data_source={**data, "stats": prepared.stats.to_dict()},
        data_watermark=prepared.snapshot.newest_rating_at, run_dir=str(run_dir),
    )


def best_pick_callback(config: TrainingConfig, prepared: PreparedDataset, tokenizer: Any, run_dir: Path) -> Any:
    """The callback that keeps the adapter with the best held-out pick accuracy, on a seeded sample of
    `pick_eval_scenarios` eval scenarios; None when the preset keeps the last adapter or nothing is held out."""
    from rl.evaluation.evalset import build_eval_set
    from rl.training.callbacks import BestPickCallback

    held_out = sorted(set(prepared.dataset["eval"]["scenario_id"])) if len(prepared.dataset["eval"]) else []
    if not config.pick_eval_scenarios or not held_out:
        return None
    random.Random(config.seed).shuffle(held_out)
    evalset = build_eval_set([], prepared.snapshot, set(held_out[: config.pick_eval_scenarios]), tokenizer)
    logger.info("Choosing the adapter by constrained pick accuracy on %d held-out scenarios.", len(evalset.cases))
    return BestPickCallback(evalset, tokenizer, run_dir / METRICS_FILE, average_from=config.average_adapter_from)


def confusion_sampling_callback(config: TrainingConfig, prepared: PreparedDataset, tokenizer: Any, run_dir: Path) -> Any:
    """Confusion-weighted sampling (`rl/training/confusion.py`) checked on a seeded sample of
    `confusion_check_scenarios` training questions; None when `confusion_weighting` is off."""
    from rl.evaluation.evalset import build_eval_set
    from rl.training.confusion import ConfusionWeightedSampling

    trained = sorted(set(prepared.dataset["train"]["scenario_id"])) if config.confusion_weighting else []
    if not trained:
        return None
    random.Random(config.seed).shuffle(trained)
    evalset = build_eval_set([], prepared.snapshot, set(trained[: config.confusion_check_scenarios]), tokenizer)
    logger.info("Confusion-weighted sampling (strength %g), checked on %d training questions between epochs.",
                config.confusion_weighting, len(evalset.cases))
    return ConfusionWeightedSampling(evalset, tokenizer, config.confusion_weighting, run_dir / METRICS_FILE)


def summarize_metrics(outcome: Any) -> dict[str, Any]:
    keep = ("train_loss", "train_runtime", "train_samples_per_second", "eval_loss", "eval_rewards/accuracies",
            "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected", "eval_logps/chosen", "eval_logps/rejected")
    merged = {**outcome.train_metrics, **outcome.eval_metrics}
    summary = {key: merged[key] for key in keep if key in merged}
    summary["algo"] = outcome.algo
    summary["dropped_too_long"] = outcome.dropped_too_long
    if outcome.time_budget is not None:
        summary["time_budget"] = outcome.time_budget
    return summary


def _finish(run: Any, status: str, error: str = "") -> None:
    """Record how the run ended (on the main process; the others have no row)."""
    if run is not None:
        run.finish(status, error)
