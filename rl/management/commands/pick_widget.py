"""`manage.py pick_widget`: ask the live model for a pick from a shell, as Command Center does through the API."""
import json

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Ask the live model (or the A/B candidate, RL_SERVING) for a pick through the serving engine, as POST /api/picks/ does, and "
        "store it as an entry operators can rate. Prints the pick as JSON. The engine down, a timeout or an answer that is "
        "not a pick: an error and nothing stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", help="The operator's question.")
        parser.add_argument("--site", default="", help="The site the question is about (its fixtures make the shortlist).")
        parser.add_argument("--role", default="", help="Who asks, e.g. facility manager.")
        parser.add_argument("--time-range", default="", help="e.g. last 24 hours.")

    def handle(self, *args, query: str, site: str, role: str, time_range: str, **options) -> None:
        from feedback.models import Scenario
        from rl.serving.picks import ServingError, pick_widget

        if not query.strip():
            raise CommandError("The question is empty.")
        try:
            served = pick_widget(Scenario(query=query, site=site, role=role, time_range=time_range))
        except ServingError as exc:
            raise CommandError(f"{exc.code}: {exc}") from exc
        self.stdout.write(json.dumps({"question": query, "site": site, "widget": served.pick.widget, "fixtures": list(served.pick.fixtures),
                                      "title": served.pick.title, "entry_id": served.entry.external_id,
                                      "model_version": served.model_version, "arm": served.arm, "confidence": served.entry.confidence,
                                      "seconds": round(served.seconds, 2)}))
