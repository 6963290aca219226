"""`manage.py rollback_model`: make the version live before the current one live again."""
import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Make the version that was live before the current one live again: the live alias points back at it and "
        "the rollback is recorded. The serving engine down: nothing changes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--engine-url", "--ollama-host", dest="ollama_host", help="The serving engine's address (default: OLLAMA_HOST for Ollama, OPENAI_BASE_URL for the OpenAI-compatible engines; RL_SERVING's engine says which).")
        parser.add_argument("--reason", default="", help="Why, for the deployment record.")

    def handle(self, *args, ollama_host: str | None, reason: str, **options) -> None:
        from rl.deploy.engines import EngineUnavailable, RegistrationError
        from rl.deploy.registry import RegistryError, rollback
        from rl.export.exporter import ExportError

        try:
            deployment = rollback(by=getpass.getuser(), reason=reason, host=ollama_host)
        except (RegistryError, EngineUnavailable, RegistrationError, ExportError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Rolled back: {deployment.version.ollama_name} is live as {deployment.alias} "
                          f"(was {deployment.previous.ollama_name}).")
