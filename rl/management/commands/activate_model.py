"""`manage.py activate_model NAME`: a person makes a version live (register, point the alias, record it)."""
import getpass

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Make a model version the live one: register it with the serving engine if it is not yet, point the live alias "
        "(RL_ONLINE_LEARNING live_alias, default cc-widget-selector:live) at it with /api/copy, and record the "
        "deployment. Exactly one version is live. This is a person's decision and skips the gate; the online learner "
        "deploys only what passed it. The serving engine down: nothing changes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The version: name:tag as Ollama knows it (cc-widget-selector:<run>), its tag, or its id.")
        parser.add_argument("--quantization", help="When the run was exported in several quantizations.")
        parser.add_argument("--engine-url", "--ollama-host", dest="ollama_host", help="The serving engine's address (default: OLLAMA_HOST for Ollama, OPENAI_BASE_URL for the OpenAI-compatible engines; RL_SERVING's engine says which).")
        parser.add_argument("--reason", default="", help="Why, for the deployment record.")

    def handle(self, *args, name: str, quantization: str | None, ollama_host: str | None, reason: str, **options) -> None:
        from rl.deploy.engines import EngineUnavailable, RegistrationError
        from rl.deploy.registry import RegistryError, activate, find_version
        from rl.export.exporter import ExportError

        try:
            version = find_version(name, quantization)
            deployment = activate(version, by=getpass.getuser(), reason=reason or "activate_model", host=ollama_host)
        except (RegistryError, EngineUnavailable, RegistrationError, ExportError) as exc:
            raise CommandError(str(exc)) from exc
        was = deployment.previous.ollama_name if deployment.previous else "nothing"
        self.stdout.write(f"{version.ollama_name} is live as {deployment.alias} (was {was}).")
