from django.core.management.base import BaseCommand, CommandError, CommandParser

from feedback.files import FeedbackFileError, read_data_file, read_ratings_file
from feedback.services import feedback_import


class Command(BaseCommand):
    help = (
        "Import a data file (catalogs, scenarios, entries) and/or a ratings file into the database. "
        "All or nothing: a malformed file changes nothing. Importing the same files twice changes nothing. "
        "Formats: docs/file-formats.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--data-file", help="JSON data file: widgets, fixtures, scenarios, entries.")
        parser.add_argument("--ratings-file", help="JSON ratings file: {entry_id, rating, tags, notes, rater, created_at}.")

    def handle(self, *args, data_file: str | None, ratings_file: str | None, **options) -> None:
        if not data_file and not ratings_file:
            raise CommandError("Nothing to import: pass --data-file and/or --ratings-file.")
        try:
            data = read_data_file(data_file) if data_file else None
            ratings = read_ratings_file(ratings_file) if ratings_file else None
            report = feedback_import(data, ratings, data_path=data_file or "<data>", ratings_path=ratings_file or "<ratings>")
        except FeedbackFileError as exc:
            raise CommandError(f"Nothing imported. {exc}") from exc
        for line in report.lines():
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS("Imported." if report.changed_anything else "Already up to date: nothing changed."))
