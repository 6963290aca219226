"""`manage.py run_report`: a run's closing summary (evaluations, gate, phase minutes)."""
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = ("Print a training run's summary: base, adapter and GGUF pick accuracies (constrained) on every evaluation set "
            "recorded for it (held_out, natural, the natural set's sealed part, ...), its gate decision, and with --phases the minutes "
            "each phase of the job took. make demo ends with it.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run", help="The training run's name.")
        parser.add_argument("--phases", help="A file of '<phase>\\t<seconds>' lines (scripts/demo.sh writes one).")

    def handle(self, *args, **options) -> None:
        from rl.evaluation.report import read_phases, run_summary
        from rl.models import TrainingRun

        run = TrainingRun.objects.filter(name=options["run"]).first()
        if run is None:
            raise CommandError(f"No training run named {options['run']!r}.")
        phases = None
        if options["phases"]:
            path = Path(options["phases"])
            if not path.is_file():
                raise CommandError(f"No phases file at {path}.")
            phases = read_phases(path)
        self.stdout.write(run_summary(run, phases))
