from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.files import write_json
from feedback.selectors import feedback_data_export, feedback_ratings_export


class Command(BaseCommand):
    help = "Write the database's feedback as a data file and a ratings file, in the formats import_feedback reads."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data-file", required=True, help="Where to write catalogs, scenarios and entries.")
        parser.add_argument("--ratings-file", required=True, help="Where to write the ratings.")

    def handle(self, *args, data_file: str, ratings_file: str, **options) -> None:
        for path in (data_file, ratings_file):
            if not Path(path).parent.exists():
                raise CommandError(f"No folder for {path!r}: create {Path(path).parent} first.")
        data, ratings = feedback_data_export(), feedback_ratings_export()
        write_json(data_file, data)
        write_json(ratings_file, ratings)
        self.stdout.write(self.style.SUCCESS(
            f"Wrote {len(data.entries)} entries of {len(data.scenarios)} scenarios to {data_file} "
            f"and {len(ratings.ratings)} ratings to {ratings_file}."
        ))
