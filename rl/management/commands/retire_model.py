"""`manage.py retire_model`: stop serving a version that is not live."""
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Stop serving a model version that is not live: the serving engine drops it (vLLM unloads its LoRA adapter, "
        "llama.cpp's models file loses its entry, Ollama deletes the model) and its record says retired. The export "
        "stays; activate_model registers it again. The live version cannot be retired; the engine down: nothing changes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The version: name:tag (cc-widget-selector:<run>), its tag, or its id.")
        parser.add_argument("--quantization", help="Which export, when the name has several (q4_k_m, lora, ...).")
        parser.add_argument("--engine-url", dest="engine_url", help="The serving engine's address (default: the one it was registered at).")

    def handle(self, *args, name: str, quantization: str | None, engine_url: str | None, **options) -> None:
        from rl.deploy.engines import EngineUnavailable, RegistrationError
        from rl.deploy.registry import RegistryError, find_version, retire

        try:
            version = retire(find_version(name, quantization), host=engine_url)
        except (RegistryError, EngineUnavailable, RegistrationError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{version.ollama_name} is retired: no longer served.")
