"""One training run end to end: dataset -> run folder + TrainingRun row -> trainer -> recorded result.

Every artifact of a run lives in its folder (config.json, metrics.jsonl, tensorboard/, checkpoints/, final/), and
the TrainingRun row points at it.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import random
import subprocess
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone as dj_timezone

from rl.config import TrainingConfig, is_adapter_folder
from rl.dataset_builder import DatasetError, PreparedDataset, prepare_training_dataset
from rl.distributed import on_main_process

logger = logging.getLogger(__name__)

LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


class CheckpointError(ValueError):
    """No trained adapter where one was named."""


def resolve_checkpoint(checkpoint: str) -> tuple[Path, dict[str, Any] | None]:
    """An adapter folder (or a run folder, or a run name) and the run's config.json when there is one."""
    candidates = [Path(checkpoint), Path(checkpoint) / "final", Path(settings.RL_CHECKPOINT_DIR) / checkpoint / "final"]
    for folder in candidates:
        if is_adapter_folder(folder):
            run_config = folder.parent / "config.json"
            return folder, json.loads(run_config.read_text()) if run_config.is_file() else None
    raise CheckpointError(
        f"No trained adapter at {checkpoint!r}: expected a folder with adapter_config.json (a run's final/), "
        f"a run folder, or a run name under {settings.RL_CHECKPOINT_DIR}."
    )



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


def build_dataset(config: TrainingConfig, data: dict[str, Any], tokenizer: Any = None) -> PreparedDataset:
    prepared = prepare_training_dataset(
        data["source"], data.get("data_path"), data.get("ratings_path"),
        min_samples=config.min_samples, eval_fraction=config.eval_fraction, seed=config.seed, kind=config.kind,
        rater=data.get("rater"), max_pairs_per_scenario=config.max_pairs_per_scenario,
        hard_widget_negatives=config.hard_widget_negatives, tokenizer=tokenizer,
        until=data.get("until"),
    )
    if config.max_train_scenarios or config.balance_widgets:
        paired = set(prepared.dataset["train"]["scenario_id"])
        prepared.dataset["train"] = select_scenarios(prepared.dataset["train"], config.max_train_scenarios, config.seed,
                                                     config.balance_widgets, first=rated_since(prepared.snapshot, data.get("rated_since")))
        if prepared.kto_dataset is not None:
            # The selection is among scenarios with pairs; scenarios rated only with single thumbs all stay.
            keep = set(prepared.dataset["train"]["scenario_id"])
            prepared.kto_dataset["train"] = prepared.kto_dataset["train"].filter(
                lambda row: row["scenario_id"] in keep or row["scenario_id"] not in paired, desc="Selecting unpaired ratings")
        prepared.stats.train_pairs = len(prepared.dataset["train"])
        prepared.stats.train_scenarios = len(set(prepared.dataset["train"]["scenario_id"]))
    if config.max_train_pairs and len(prepared.dataset["train"]) > config.max_train_pairs:
        prepared.dataset["train"] = spread_over_scenarios(prepared.dataset["train"], config.max_train_pairs, config.seed)
        prepared.stats.train_pairs = len(prepared.dataset["train"])
    return prepared


def rated_since(snapshot: Any, since: datetime | str | None) -> set[str]:
    """The scenarios with a rating given or changed after `since` (none when `since` is empty): what the online
    learner's buffer counted, which reads `updated_at`."""
    if not since:
        return set()
    since = datetime.fromisoformat(since) if isinstance(since, str) else since
    return {entry.scenario_id for entry in snapshot.entries if any(vote.changed_at > since for vote in entry.votes)}


def chosen_widget(row: dict[str, Any]) -> str:
    return json.loads(row["chosen"][0]["content"])["widget"]


def select_scenarios(dataset: Any, limit: int, seed: int, balance: bool, first: Collection[str] = ()) -> Any:
    """The pairs of at most `limit` scenarios (0: all). With `balance`, scenarios are taken round-robin over the widget
    their chosen answers name, so rare widgets are not crowded out by common ones. The scenarios in `first` (the
    online learner's newly rated ones) are taken before any other."""
    rng = random.Random(seed)
    widget_of: dict[str, Counter] = {}
    for row in dataset.select_columns(["scenario_id", "chosen"]):
        widget_of.setdefault(row["scenario_id"], Counter())[chosen_widget(row)] += 1

    def ordered(scenarios: list[str]) -> list[str]:
        rng.shuffle(scenarios)
        if not balance:
            return scenarios
        queues: dict[str, list[str]] = {}
        for scenario in scenarios:
            queues.setdefault(widget_of[scenario].most_common(1)[0][0], []).append(scenario)
        taken: list[str] = []
        while any(queues.values()):
            for widget in sorted(queues):
                if queues[widget]:
                    taken.append(queues[widget].pop())
        return taken

    first = set(first)
    scenarios = ordered(sorted(s for s in widget_of if s in first)) + ordered(sorted(s for s in widget_of if s not in first))
    keep = set(scenarios[: limit or None])
    return dataset.filter(lambda row: row["scenario_id"] in keep, desc="Selecting training scenarios")


def spread_over_scenarios(dataset: Any, limit: int, seed: int) -> Any:
    """At most `limit` rows, taken round-robin across scenarios so every scenario keeps some."""
    by_scenario: dict[str, list[int]] = {}
    for index, scenario in enumerate(dataset["scenario_id"]):
        by_scenario.setdefault(scenario, []).append(index)
    rng = random.Random(seed)
    queues = [rng.sample(rows, len(rows)) for _, rows in sorted(by_scenario.items())]
    picked: list[int] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop())
    return dataset.select(sorted(picked))


def pairs_longer_than(dataset: Any, tokenizer: Any, max_length: int) -> int:
    """How many pairs' prompt + chosen + rejected exceed `max_length` tokens (the trainer drops them)."""
    too_long = 0
    for row in dataset:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
        answers = sum(len(tokenizer(row[side][0]["content"], add_special_tokens=False)["input_ids"]) + 2 for side in ("chosen", "rejected"))
        too_long += len(prompt) + answers > max_length
    return too_long


def dump_dataset(prepared: PreparedDataset, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in prepared.dataset.items():
        path = folder / f"dpo_{split}.jsonl"
        rows.to_json(str(path), lines=True, force_ascii=False)
        written.append(path)
    if prepared.kto_dataset is not None:
        for split, rows in prepared.kto_dataset.items():
            path = folder / f"kto_{split}.jsonl"
            rows.to_json(str(path), lines=True, force_ascii=False)
            written.append(path)
    (folder / "stats.json").write_text(json.dumps(prepared.stats.to_dict(), indent=1, default=str))
    return written


def save_run_dataset(run_dir: Path, dataset: Any, kto_dataset: Any) -> None:
    """The exact pairs a run trains on, kept in its folder so --resume continues on the same data."""
    dataset.save_to_disk(str(run_dir / "dataset"))
    if kto_dataset is not None:
        kto_dataset.save_to_disk(str(run_dir / "dataset_kto"))


def load_run_dataset(run_dir: Path) -> tuple[Any, Any]:
    from datasets import DatasetDict

    if not (run_dir / "dataset").is_dir():
        raise DatasetError(f"Cannot resume: {run_dir} has no saved dataset.")
    kto = DatasetDict.load_from_disk(str(run_dir / "dataset_kto")) if (run_dir / "dataset_kto").is_dir() else None
    return DatasetDict.load_from_disk(str(run_dir / "dataset")), kto


def dry_run(config: TrainingConfig, data: dict[str, Any], dump_dir: str | None = None) -> list[tuple[str, str]]:
    """Build the dataset as a run would and describe it; trains nothing and writes nothing but the optional dump."""
    from rl.base_model import load_tokenizer

    tokenizer = load_tokenizer(config.base_model or None)
    prepared = build_dataset(config, data, tokenizer)
    report = prepared.stats.table()
    report.append((f"train pairs longer than max_length {config.max_length}", str(pairs_longer_than(prepared.dataset["train"], tokenizer, config.max_length))))
    if dump_dir:
        report.append(("dataset written to", ", ".join(str(p) for p in dump_dataset(prepared, dump_dir))))
    return report


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
        if not (folder / "config.json").is_file():
            raise DatasetError(f"Cannot resume {resume!r}: no run folder with config.json at {folder}.")
        return folder.name, folder
    name = run_name or f"{preset}-{algo}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    folder = parent / name
    if folder.exists():
        raise DatasetError(f"Run folder {folder} exists already: pick another --run-name, or --resume {name}.")
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
    from rl.trainer import CommandCenterDPOTrainer

    # Under `accelerate launch` every process trains, but only the main one decides the run folder, reads the
    # feedback, writes the folder and the TrainingRun row; the others read the dataset the main one saved.
    name, run_dir = on_main_process(lambda: resolve_run_dir(output_dir, run_name, resume, preset, config.algo), share=True)
    if resume:
        saved = json.loads((run_dir / "config.json").read_text())
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
            prepared = build_dataset(trainer.config, data, trainer.tokenizer)
            return _start_run(name, run_dir, preset, trainer.config, data, prepared, dump_dir)

        run = on_main_process(prepare_run)
    dataset, kto_dataset = (prepared.dataset, prepared.kto_dataset) if prepared is not None else load_run_dataset(run_dir)
    best_pick = best_pick_callback(trainer.config, prepared, trainer.tokenizer, run_dir) if prepared is not None else None
    try:
        outcome = trainer.train(
            dataset["train"], dataset["eval"], output_dir=run_dir,
            kto_dataset=kto_dataset, resume_from_checkpoint=bool(resume),
            callbacks=[best_pick] if best_pick is not None else [],
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
    run.status, run.error, run.finished_at = TrainingRun.Status.RUNNING, "", None
    run.save()
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
    (run_dir / "config.json").write_text(json.dumps(record, indent=1, default=str))
    return TrainingRun.objects.create(
        name=name, status=TrainingRun.Status.RUNNING, preset=preset, algo=config.algo,
        base_model=recorded_base_model(config),
        config=config.to_dict(), data_source={**data, "stats": prepared.stats.to_dict()},
        data_watermark=prepared.snapshot.newest_rating_at, run_dir=str(run_dir),
    )


def best_pick_callback(config: TrainingConfig, prepared: PreparedDataset, tokenizer: Any, run_dir: Path) -> Any:
    """The callback that keeps the adapter with the best held-out pick accuracy, on a seeded sample of
    `pick_eval_scenarios` eval scenarios; None when the preset keeps the last adapter or nothing is held out."""
    from rl.best_pick import BestPickCallback
    from rl.evaluation import build_eval_set
    from rl.trainer import METRICS_FILE

    held_out = sorted(set(prepared.dataset["eval"]["scenario_id"])) if len(prepared.dataset["eval"]) else []
    if not config.pick_eval_scenarios or not held_out:
        return None
    random.Random(config.seed).shuffle(held_out)
    evalset = build_eval_set([], prepared.snapshot, set(held_out[: config.pick_eval_scenarios]), tokenizer)
    logger.info("Choosing the adapter by constrained pick accuracy on %d held-out scenarios.", len(evalset.cases))
    return BestPickCallback(evalset, tokenizer, run_dir / METRICS_FILE)


def recorded_base_model(config: TrainingConfig) -> str:
    """The base model as a TrainingRun records it: the configured one, or the default it resolved to."""
    from rl.base_model import default_base_model

    return config.base_model or f"(default) {default_base_model()}"


def summarize_metrics(outcome: Any) -> dict[str, Any]:
    keep = ("train_loss", "train_runtime", "train_samples_per_second", "eval_loss", "eval_rewards/accuracies",
            "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected", "eval_logps/chosen", "eval_logps/rejected")
    merged = {**outcome.train_metrics, **outcome.eval_metrics}
    summary = {key: merged[key] for key in keep if key in merged}
    summary["algo"] = outcome.algo
    summary["dropped_too_long"] = outcome.dropped_too_long
    return summary


def _finish(run: Any, status: str, error: str = "") -> None:
    """Record how the run ended (on the main process; the others have no row)."""
    if run is None:
        return
    run.status = status
    run.error = error
    run.finished_at = dj_timezone.now()
    run.save()
