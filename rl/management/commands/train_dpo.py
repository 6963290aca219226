"""`manage.py train_dpo`: train a LoRA adapter with DPO or KTO on the ratings; one flag per preset field."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.core.base_model import BaseModelError
from rl.core.cli import add_config_flags, config_overrides
from rl.core.config import PRESETS, ConfigError, TrainingConfig, training_config
from rl.data.snapshot import DatasetError

if TYPE_CHECKING:
    from rl.training.run import RunResult


class Command(BaseCommand):
    help = (
        "Train a LoRA adapter on operators' ratings with DPO (or KTO), starting from a preset (--config) and "
        "overriding any field by its flag. --dry-run builds the dataset, prints its stats and trains nothing. "
        "Every run gets a folder under RL_CHECKPOINT_DIR (config.json, metrics.jsonl, TensorBoard logs, checkpoints, final/)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--config", default="default", choices=sorted(PRESETS), help="Training preset (default: default; 'cpu' on machines without a GPU).")
        parser.add_argument("--source", default="db", choices=["db", "file"], help="Where ratings come from (default: db).")
        parser.add_argument("--data-file", help="With --source file: the data file (catalogs, scenarios, entries).")
        parser.add_argument("--ratings-file", help="With --source file: the ratings file.")
        parser.add_argument("--rater", help="Use only this rater's ratings (a personal adapter).")
        parser.add_argument("--dry-run", action="store_true", help="Build the dataset and print its stats; train nothing.")
        parser.add_argument("--dump-dataset", metavar="DIR", help="Write the train/eval pairs (and KTO rows) as JSONL to DIR.")
        parser.add_argument("--output-dir", help="Parent folder of run folders (default: RL_CHECKPOINT_DIR).")
        parser.add_argument("--run-name", help="Name of the run folder (default: <preset>-<algo>-<timestamp>).")
        parser.add_argument("--resume", metavar="RUN", help="Continue an interrupted run (its name or folder) from its last checkpoint.")
        parser.add_argument("--export", action="store_true", help="After training, merge and export to GGUF (see export_model).")
        parser.add_argument("--register-ollama", action="store_true", help="With --export: register the model with Ollama.")
        parser.add_argument("--quantization", default="q4_k_m", help="With --export: GGUF quantization (default: q4_k_m).")
        add_config_flags(parser, TrainingConfig, title="training settings (override the preset)")

    def handle(self, *args, **options) -> None:
        from rl.data.dry_run import dry_run
        from rl.loop.pipeline import train_then_export
        from rl.training.distributed import exit_without_teardown, finish_processes

        try:
            config = training_config(options["config"], **config_overrides(options))
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        if options["source"] == "file" and not (options["data_file"] and options["ratings_file"]):
            raise CommandError("--source file needs --data-file and --ratings-file.")
        for name in ("data_file", "ratings_file"):
            if options[name] and not Path(options[name]).is_file():
                raise CommandError(f"No such file: {options[name]} (--{name.replace('_', '-')}).")
        data = {"source": options["source"], "data_path": options["data_file"], "ratings_path": options["ratings_file"], "rater": options["rater"]}
        try:
            if options["dry_run"]:
                report = dry_run(config, data, dump_dir=options["dump_dataset"])
                width = max(len(label) for label, _ in report)
                for label, value in report:
                    self.stdout.write(f"{label:<{width}}  {value}")
                return
            result = train_then_export(
                config, data, preset=options["config"], output_dir=options["output_dir"], run_name=options["run_name"],
                resume=options["resume"], dump_dir=options["dump_dataset"],
                export={"quantization": options["quantization"], "register": options["register_ollama"]} if options["export"] else None,
            )
        except (DatasetError, BaseModelError, ConfigError) as exc:
            raise CommandError(str(exc)) from exc
        several_processes = finish_processes()
        try:
            self._report(result)
        except CommandError as exc:
            if not several_processes:
                raise
            self.stderr.write(f"CommandError: {exc}")
            exit_without_teardown(1)
        if several_processes:
            exit_without_teardown(0)

    def _report(self, result: RunResult) -> None:
        """The run's summary (main process only) and, as a CommandError, a run or export that did not succeed."""
        if not result.is_main_process:
            if result.status != "succeeded":
                raise CommandError(f"Run {result.run_name} {result.status} on this process: {result.error}")
            return
        for label, value in result.summary():
            self.stdout.write(f"{label}: {value}")
        if result.status != "succeeded":
            raise CommandError(f"Run {result.run_name} {result.status}: {result.error or 'see its folder'}")
        if result.export is not None:
            self.stdout.write(f"export: {result.export['model']} {result.export['status']}: {result.export['message']}")
            if result.export["status"] == "rejected":
                raise CommandError(f"Run {result.run_name} trained, but its export failed verification: {result.export['message']}")
