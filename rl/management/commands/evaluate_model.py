import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.base_model import BaseModelError
from rl.dataset_builder import DatasetError
from rl.evaluation import DEFAULT_MAX_NEW_TOKENS, EvaluationError, comparison_rows
from rl.training_run import CheckpointError


class Command(BaseCommand):
    help = (
        "Evaluate a tuned model on held-out ratings: preference accuracy (log p(chosen) > log p(rejected)), DPO reward "
        "margin against the base, and pick accuracy by greedy generation (valid JSON, widget, fixtures). "
        "--checkpoint scores a run's LoRA adapter through PyTorch; --gguf scores an exported GGUF through llama.cpp. "
        "Held-out data: the run's eval split, or all of --data-file/--ratings-file. Output format: docs/evaluation.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--checkpoint", help="A run's adapter folder (final/), its run folder, or its run name.")
        parser.add_argument("--gguf", help="A GGUF file to evaluate through llama.cpp (as the tuned model).")
        parser.add_argument("--compare-base", action="store_true", help="Also evaluate the base model, side by side.")
        parser.add_argument("--base-model", help="Base model (default: the run's, else RL_BASE_MODEL or SmolLM2).")
        parser.add_argument("--data-file", help="Held-out data file (import format); use with --ratings-file.")
        parser.add_argument("--ratings-file", help="Held-out ratings file (import format).")
        parser.add_argument("--limit", type=int, help="Evaluate at most N pairs and N scenarios.")
        parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="Generation length cap.")
        parser.add_argument("--output", help="Write results JSON here (default: the run folder's evaluation.json).")

    def handle(self, *args, **options) -> None:
        from rl.evaluation_run import evaluate_model

        if options["limit"] is not None and options["limit"] <= 0:
            raise CommandError("--limit must be positive.")
        try:
            results = evaluate_model(
                checkpoint=options["checkpoint"], gguf=options["gguf"], compare_base=options["compare_base"],
                base_model=options["base_model"], data_path=options["data_file"], ratings_path=options["ratings_file"],
                limit=options["limit"], output=options["output"], max_new_tokens=options["max_new_tokens"],
            )
        except (EvaluationError, DatasetError, BaseModelError, CheckpointError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"held-out data: {json.dumps(results['data'])}")
        for role, name in results["models"].items():
            self.stdout.write(f"{role}: {name}")
        self.stdout.write(f"\n{'metric':<32}{'base':>10}{'tuned':>10}{'diff':>10}")
        for metric, base, tuned, diff in comparison_rows(results):
            self.stdout.write(f"{metric:<32}{base:>10}{tuned:>10}{diff:>10}")
        if "written_to" in results:
            self.stdout.write(f"\nresults: {results['written_to']}")
