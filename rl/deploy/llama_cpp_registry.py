"""llama.cpp's OpenAI-compatible server (llama-cpp-python's `python -m llama_cpp.server --config_file F`): a version
is its GGUF under its name in the models file F, which the project writes.

The server reads F when it starts, so a change is served after a restart: `manage.py serve_llama_cpp` runs the server
and restarts it when F changes (rl/serving/llama_cpp_server.py). The server holds one model in memory at a time and
loads another when a request names it, so an A/B split between two versions reloads a GGUF whenever the arm changes:
fine for a small model on one box, not for many versions under load (use vLLM there).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rl.deploy.engines import RegistrationError

logger = logging.getLogger(__name__)

# llama-cpp-python's names for the chat formats rl.export.modelfile recognises; any other family uses the chat
# template the GGUF carries, which is what the server does when chat_format is left out.
CHAT_FORMATS = {"chatml": "chatml", "llama3": "llama-3"}
CONTEXT_TOKENS = 4096  # a prompt with the catalog and a fixture shortlist is about 1,000 tokens


@dataclass(frozen=True)
class ModelsFile:
    """The server's config file (llama-cpp-python's ConfigFileSettings as JSON): host, port and `models`, each with
    `model` (the GGUF) and `model_alias` (the name requests use). Edited under a lock and replaced atomically, so the
    server never reads half a file and two registrations cannot lose each other's entry."""

    path: Path

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"models": []}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def aliases(self) -> dict[str, str]:
        """Each served name with its GGUF."""
        return {m["model_alias"]: m["model"] for m in self.read().get("models", [])}

    @contextlib.contextmanager
    def editing(self, url: str) -> Iterator[dict[str, Any]]:
        """The file's content to change in place; written back, if it changed, when the block ends without an error."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                before = self.read()
                content = json.loads(json.dumps(before))
                address = urlsplit(url)
                content.setdefault("host", address.hostname or "127.0.0.1")
                content.setdefault("port", address.port or 8080)
                yield content
                if content == before:  # an unchanged file must not restart the server
                    return
                handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".models-", suffix=".json")
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(content, out, indent=1)
                os.replace(temporary, self.path)
        except OSError as exc:
            raise RegistrationError(f"Cannot write llama.cpp's models file {self.path}: {exc}") from exc


def _model_entry(alias: str, gguf_path: str, chat_family: str) -> dict[str, Any]:
    entry = {"model": gguf_path, "model_alias": alias, "n_ctx": CONTEXT_TOKENS, "verbose": False}
    if chat_family in CHAT_FORMATS:
        entry["chat_format"] = CHAT_FORMATS[chat_family]
    return entry


def _put(models: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`models` with `entry` in place of the one of its name, or added at the end."""
    if any(m.get("model_alias") == entry["model_alias"] for m in models):
        return [entry if m.get("model_alias") == entry["model_alias"] else m for m in models]
    return [*models, entry]


@dataclass(frozen=True)
class LlamaCppServerEngine:
    url: str
    models_file_path: Path
    kind: str = "llama_cpp"

    @property
    def models_file(self) -> ModelsFile:
        return ModelsFile(Path(self.models_file_path))

    def register(self, version: Any, chat_family: str, template: str, parameters: dict[str, Any]) -> dict[str, str]:
        if not version.gguf_path or not Path(version.gguf_path).is_file():
            raise RegistrationError(f"{version.ollama_name} has no GGUF ({version.gguf_path!r}); llama.cpp serves GGUF files.")
        with self.models_file.editing(self.url) as content:
            content["models"] = _put(content.get("models", []), _model_entry(version.ollama_name, version.gguf_path, chat_family))
        logger.info("llama.cpp models file %s: %s -> %s", self.models_file.path, version.ollama_name, version.gguf_path)
        return {}

    def point_alias(self, version: Any, alias: str) -> None:
        with self.models_file.editing(self.url) as content:
            models = content.get("models", [])
            source = next((m for m in models if m.get("model_alias") == version.ollama_name), None)
            if source is None:
                raise RegistrationError(f"{version.ollama_name} is not in llama.cpp's models file {self.models_file.path}; register it first.")
            # The live alias goes first: the server loads its first model at start-up and answers unknown names with it.
            content["models"] = [{**source, "model_alias": alias}] + [m for m in models if m.get("model_alias") != alias]
        logger.info("llama.cpp models file %s: %s now points at %s", self.models_file.path, alias, version.ollama_name)

    def retire(self, version: Any) -> None:
        with self.models_file.editing(self.url) as content:
            content["models"] = [m for m in content.get("models", []) if m.get("model_alias") != version.ollama_name]
