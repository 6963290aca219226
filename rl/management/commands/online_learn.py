"""`manage.py online_learn`: cron's entry to the online learner (status, dry run, force, force-deploy)."""
import getpass
import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rl.core.cli import add_set_flag, parse_overrides
from rl.core.config import ConfigError


class Command(BaseCommand):
    help = (
        "The online learner's cron entry point. Deploys a candidate left pending while Ollama was down, then, if a "
        "retrain is due (enough new usable ratings, or some after retrain_interval_hours), claims the run (one at a time, "
        "enforced by the database) and goes train -> evaluate -> gate -> export -> deploy, one log line per stage. "
        "A run whose heartbeat stopped is marked failed and a new one may start. Settings: RL_ONLINE_LEARNING "
        "(JSON; fields below), ENABLE_ONLINE_LEARNING. Exit codes: 0 nothing to do, another run in progress, or a "
        "run that finished (deployed, exported, or rejected by its gate); 1 a stage failed; 75 a candidate passed "
        "its gate but Ollama was down (the next tick deploys it)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--status", action="store_true", help="Print the learner's status as JSON and exit.")
        parser.add_argument("--dry-run", action="store_true", help="Say what a tick would do; change nothing.")
        parser.add_argument("--force", action="store_true", help="Retrain now even if not due (and even if ENABLE_ONLINE_LEARNING is off).")
        parser.add_argument("--force-deploy", action="store_true",
                            help="For a person, never for cron: deploy the candidate even if its gate rejects it (recorded with your name).")
        add_set_flag(parser, purpose="for this tick", example="min_samples_to_retrain=20")

    def handle(self, *args, status: bool, dry_run: bool, force: bool, force_deploy: bool, set: list[str], **options) -> None:
        from rl.loop.online_learner import init_online_learner

        try:
            learner = init_online_learner(**parse_overrides(set))
        except ConfigError as exc:
            raise CommandError(str(exc)) from exc
        if status:
            self.stdout.write(json.dumps(learner.get_status(), indent=1))
            return
        result = learner.tick(force=force, dry_run=dry_run, force_deploy=getpass.getuser() if force_deploy else "")
        self.stdout.write(result.message)
        if result.exit_code:
            raise CommandError(result.message, returncode=result.exit_code)

