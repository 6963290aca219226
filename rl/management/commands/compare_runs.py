"""`manage.py compare_runs`: one recipe's seeds against another's on the same evaluation set."""
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = ("Compare two recipes trained at the same seeds (the candidate's runs and the baseline's, paired by position: "
            "give both in the same seed order) on one evaluation set they were both evaluated on with constrained decoding "
            "(evaluate_model --decoding constrained): each run's widget and fixture accuracy, the mean and the worst seed "
            "of each side, collapse warnings, and the mean per-question difference with a 95% paired bootstrap interval "
            "over the questions. Reads the database only; --gguf compares the runs' exported GGUFs instead of their "
            "adapters.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--candidate", nargs="+", required=True, metavar="RUN", help="The new recipe's runs, one per seed.")
        parser.add_argument("--baseline", nargs="+", required=True, metavar="RUN", help="The recipe it is measured against, the same seeds in the same order.")
        parser.add_argument("--set", dest="set_name", default="natural",
                            help="A set evaluate_model recorded for the runs, by the name run_report shows: held_out, natural, ... (default natural).")
        parser.add_argument("--gguf", metavar="QUANTIZATION", help="Compare the runs' GGUFs of this quantization (e.g. q4_k_m), evaluated with evaluate_model --gguf.")
        parser.add_argument("--seed", type=int, default=0, help="The bootstrap's random seed (default 0).")

    def handle(self, *args, candidate: list[str], baseline: list[str], set_name: str, gguf: str | None, seed: int, **options) -> None:
        from rl.evaluation.seed_comparison import SeedComparisonError, compare_seeds, seed_scores
        from rl.models import TrainingRun

        runs = {run.name: run for run in TrainingRun.objects.filter(name__in=candidate + baseline)}
        unknown = [name for name in candidate + baseline if name not in runs]
        if unknown:
            raise CommandError(f"No training run named {', '.join(repr(n) for n in unknown)}.")
        try:
            comparison = compare_seeds([seed_scores(runs[n], set_name, gguf) for n in candidate],
                                       [seed_scores(runs[n], set_name, gguf) for n in baseline],
                                       set_name=set_name, model=f"{gguf} GGUF" if gguf else "adapter", seed=seed)
        except SeedComparisonError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(comparison.words())
