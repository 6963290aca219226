"""`manage.py serve_llama_cpp`: llama.cpp's OpenAI-compatible server on the project's models file, restarted when it changes."""
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Run llama.cpp's OpenAI-compatible server (llama-cpp-python's python -m llama_cpp.server) on the models file "
        "the project writes (RL_LLAMA_CPP_MODELS_FILE) when versions are registered with RL_SERVING engine llama_cpp, "
        "and restart it whenever that file changes, since the server reads it only at start-up. Serves at the host and "
        "port the file names (from OPENAI_BASE_URL when it was first written); with no model registered yet it waits for "
        "the first. Runs until interrupted (SIGINT/SIGTERM); "
        "run it under systemd or supervisor in production."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--models-file", default=str(settings.RL_LLAMA_CPP_MODELS_FILE), help="The server's models file (default: RL_LLAMA_CPP_MODELS_FILE).")
        parser.add_argument("--poll-seconds", type=float, default=1.0, help="How often to look for a change of the file (default: 1).")
        parser.add_argument("--log-file", default="", help="Append the server's own output here (default: discarded).")

    def handle(self, *args, models_file: str, poll_seconds: float, log_file: str, **options) -> None:
        from rl.serving.llama_cpp_server import EngineStartError, LlamaCppServer

        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        server = LlamaCppServer(models_file, log_path=log_file or None)
        try:
            if server.models_file.aliases():
                server.start()
                self.stdout.write(f"llama.cpp's server at {server.url}: serving {', '.join(sorted(server.models_file.aliases()))}")
            else:
                self.stdout.write(f"{server.models_file.path} names no model yet: the server starts once a version is registered")
            server.watch(stop, poll_seconds)
        except EngineStartError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            server.stop()
        self.stdout.write(f"stopped after {server.restarts} restart(s)")
