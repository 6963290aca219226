"""`manage.py evaluate_model`: base against tuned on the held-out split or the natural set, through PyTorch or llama.cpp."""
import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.core.base_model import BaseModelError
from rl.core.runs import CheckpointError
from rl.data.snapshot import DatasetError
from rl.evaluation.backends import DECODINGS, DEFAULT_MAX_NEW_TOKENS
from rl.evaluation.evalset import EvaluationError
from rl.evaluation.metrics import comparison_rows


class Command(BaseCommand):
    help = (
        "Evaluate a tuned model on held-out ratings: preference accuracy (log p(chosen) > log p(rejected)), DPO reward "
        "margin against the base, and pick accuracy by greedy generation (valid JSON, widget, fixtures), free and constrained "
        "to the answer's JSON schema. --checkpoint scores a run's LoRA adapter through PyTorch; --gguf scores an exported "
        "GGUF through llama.cpp. Held-out data: the run's eval split, --natural (the hand-written natural-question set's "
        "gate part; --natural sealed: its sealed part, which no gate or tuning reads), or all of --data-file/--ratings-file. "
        "Output format: docs/evaluation.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--checkpoint", help="A run's adapter folder (final/), its run folder, or its run name.")
        parser.add_argument("--gguf", help="A GGUF file to evaluate through llama.cpp (as the tuned model).")
        parser.add_argument("--compare-base", action="store_true", help="Also evaluate the base model, side by side.")
        parser.add_argument("--base-model", help="Base model (default: the run's, else RL_BASE_MODEL or SmolLM2).")
        parser.add_argument("--data-file", help="Held-out data file (import format); use with --ratings-file.")
        parser.add_argument("--ratings-file", help="Held-out ratings file (import format).")
        parser.add_argument("--natural", nargs="?", const="gate", choices=("gate", "sealed"),
                            help="Evaluate on the natural-question set, hand-written apart from the demo generator: its gate part "
                            "(evalsets/natural/, the default), which deploy gates score too, or its sealed part "
                            "(evalsets/natural-sealed/), which nothing else reads.")
        parser.add_argument("--decoding", choices=(*DECODINGS, "both"), default="both",
                            help="Pick accuracy from free greedy answers, answers constrained to the JSON schema, or both (default).")
        parser.add_argument("--limit", type=int, help="Evaluate at most N pairs and N scenarios.")
        parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="Generation length cap.")
        parser.add_argument("--output", help="Write results JSON here (default: the run folder's evaluation.json).")

    def handle(self, *args, **options) -> None:
        from rl.data.evalsets import NATURAL_DATA_FILE, NATURAL_RATINGS_FILE
        from rl.evaluation.evaluation_run import evaluate_model

        if options["limit"] is not None and options["limit"] <= 0:
            raise CommandError("--limit must be positive.")
        if options["natural"]:
            if options["data_file"] or options["ratings_file"]:
                raise CommandError("--natural and --data-file/--ratings-file name two evaluation sets: pass one.")
            if options["natural"] == "sealed":
                from rl.data.sealed import SEALED_DATA_FILE, SEALED_RATINGS_FILE

                options["data_file"], options["ratings_file"] = str(SEALED_DATA_FILE), str(SEALED_RATINGS_FILE)
            else:
                options["data_file"], options["ratings_file"] = str(NATURAL_DATA_FILE), str(NATURAL_RATINGS_FILE)
        decodings = DECODINGS if options["decoding"] == "both" else (options["decoding"],)
        try:
            results = evaluate_model(
                checkpoint=options["checkpoint"], gguf=options["gguf"], compare_base=options["compare_base"],
                base_model=options["base_model"], data_path=options["data_file"], ratings_path=options["ratings_file"],
                limit=options["limit"], output=options["output"], max_new_tokens=options["max_new_tokens"], decodings=decodings,
            )
        except (EvaluationError, DatasetError, BaseModelError, CheckpointError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"held-out data: {json.dumps(results['data'])}")
        for role, name in results["models"].items():
            self.stdout.write(f"{role}: {name}")
        self.stdout.write(f"\n{'metric':<32}{'base':>10}{'tuned':>10}{'diff':>10}")
        for metric, base, tuned, diff in comparison_rows(results):
            self.stdout.write(f"{metric:<32}{base:>10}{tuned:>10}{diff:>10}")
        for prefix in ("", "constrained_"):
            self._per_widget_table(results, prefix)
        if "written_to" in results:
            self.stdout.write(f"\nresults: {results['written_to']}")

    def _per_widget_table(self, results: dict, prefix: str) -> None:
        """One row per widget: how many questions want it and, per model, how many it got right and how often it
        answered it (collapse warnings are in the log above)."""
        roles = [role for role in ("base", "tuned") if (results.get(role) or {}).get(prefix + "per_widget")]
        if not roles:
            return
        tables = {role: results[role][prefix + "per_widget"] for role in roles}
        widgets = sorted({widget for table in tables.values() for widget in table})
        self.stdout.write(f"\n{prefix.rstrip('_') or 'free'} decoding, per widget (right / answered)")
        self.stdout.write(f"{'widget':<18}{'questions':>10}" + "".join(f"{role:>16}" for role in roles))
        for widget in widgets:
            rows = [table.get(widget) for table in tables.values()]
            support = next(row["support"] for row in rows if row)
            cells = "".join(f"{row['right'] if row else 0:>10} / {row['answered'] if row else 0:>3}" for row in rows)
            self.stdout.write(f"{widget:<18}{support:>10}{cells}")
