from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from feedback.demo import DEFAULT_SCENARIO_COUNT, DEMO_RATER, DEMO_RATER_PASSWORD, build_demo
from feedback.files import write_json
from feedback.services import feedback_import


class Command(BaseCommand):
    help = (
        "Create the demo command center: widget and fixture catalogs, operator scenarios with every widget variant, "
        "ratings from a SIMULATED rater, and a demo rater account for the rating UI. Deterministic for a seed. "
        "For demos and development only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
        parser.add_argument("--scenarios", type=int, default=DEFAULT_SCENARIO_COUNT,
                            help=f"How many operator scenarios (default {DEFAULT_SCENARIO_COUNT}).")
        parser.add_argument("--noise", type=float, default=0.05, help="How often the simulated rater is wrong (default 0.05).")
        parser.add_argument("--write-files", metavar="DIR", help="Also write exhaustive_data.json and ratings.json to DIR.")
        parser.add_argument("--no-ratings", action="store_true", help="Seed the catalogs and entries only, for rating by hand.")

    def handle(self, *args, seed: int, scenarios: int, noise: float, write_files: str | None, no_ratings: bool, **options) -> None:
        data, ratings = build_demo(seed=seed, scenario_count=scenarios, noise=noise)
        with transaction.atomic():
            report = feedback_import(data, None if no_ratings else ratings)
            user, created = get_user_model().objects.get_or_create(username=DEMO_RATER, defaults={"is_staff": True})
            if created:
                user.set_password(DEMO_RATER_PASSWORD)
                user.is_superuser = True
                user.save()
        for line in report.lines():
            self.stdout.write(line)
        if write_files:
            folder = Path(write_files)
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "exhaustive_data.json", data)
            write_json(folder / "ratings.json", ratings)
            self.stdout.write(f"Wrote {folder / 'exhaustive_data.json'} and {folder / 'ratings.json'}.")
        self.stdout.write(self.style.SUCCESS(
            f"Demo ready: {len(data.scenarios)} scenarios, {len(data.entries)} entries, "
            f"{0 if no_ratings else len(ratings.ratings)} simulated ratings. "
            f"Log in at /accounts/login/ as {DEMO_RATER!r} with password {DEMO_RATER_PASSWORD!r} (demo only)."
        ))
