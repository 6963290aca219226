"""`manage.py soup_adapters`: several trained runs' adapters averaged into one new run (a model soup)."""
from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.core.base_model import BaseModelError
from rl.core.runs import CheckpointError


class Command(BaseCommand):
    help = (
        "Average the adapters of several trained runs into one (a model soup: the exact mean of their weight deltas, "
        "PEFT's add_weighted_adapter with combination_type='cat'), written as a new run folder (config.json, final/) "
        "with a TrainingRun row, so evaluate_model, export_model and gate_model take it like any run. The members must "
        "share the base model, the adapted modules and the held-out split: train them with different --seed and one "
        "--split-seed, each as long as the preset trains (docs/training-recipe.md, rounds fifteen and sixteen: the mean "
        "of three full-length seeds beat every seed; a mean of shorter runs did not)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("runs", nargs="+", metavar="RUN", help="The members: run names, run folders or adapter folders (final/); two or more.")
        parser.add_argument("--run-name", required=True, help="The soup's run name (a new folder under RL_CHECKPOINT_DIR).")
        parser.add_argument("--output-dir", help="Where the soup's run folder goes (default: RL_CHECKPOINT_DIR).")

    def handle(self, *args, runs: list[str], run_name: str, output_dir: str | None, **options) -> None:
        from rl.training.soup import SoupError, make_soup

        try:
            run = make_soup(runs, run_name, output_dir)
        except (SoupError, CheckpointError, BaseModelError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"soup {run.name}: the mean of {', '.join(run.data_source['soup_of'])}, adapter in {run.adapter_dir}")
        self.stdout.write(f"next: manage.py evaluate_model --checkpoint {run.name} --compare-base --natural")
