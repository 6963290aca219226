"""Where model versions are registered and the live alias points: one class per serving engine, one interface.

| engine | a version is | the live alias is |
| --- | --- | --- |
| `ollama` (`ollama_registry.py`) | a GGUF uploaded as a blob plus a Modelfile, created as `name:tag` | an Ollama copy (`/api/copy`) |
| `llama_cpp` (`llama_cpp_registry.py`) | a GGUF under its `model_alias` in the server's models file | a second entry for the same GGUF |
| `vllm` (`vllm_registry.py`) | its LoRA adapter folder, loaded at run time on the shared base | the adapter loaded once more under the alias's name |

The project's records (ModelVersion, Deployment) say which version is live; serving always asks a version by its own
name, never the alias, which is there for other clients.
"""
from __future__ import annotations

from typing import Any, Protocol


class EngineUnavailable(RuntimeError):
    """The engine did not answer; nothing was registered or changed."""


class RegistrationError(RuntimeError):
    """The engine answered but refused the model, or the version lacks what the engine needs."""


class ServingEngine(Protocol):
    kind: str
    url: str

    def register(self, version: Any, chat_family: str, template: str, parameters: dict[str, Any]) -> dict[str, str]:
        """Make `version` servable under its name (name:tag). Returns what the engine confirmed (Ollama: the blob's
        digest). `chat_family`, `template` and `parameters` are the export's chat format (rl.export.modelfile)."""

    def point_alias(self, version: Any, alias: str) -> None:
        """Make `alias` answer as `version` does."""

    def retire(self, version: Any) -> None:
        """Stop serving `version` (it stays exported and can be registered again)."""


def serving_engine(kind: str | None = None, url: str | None = None) -> ServingEngine:
    """The engine of `kind` (default: RL_SERVING's `engine`) at `url` (default: its configured address)."""
    from django.conf import settings

    from rl.core.config import serving_config

    config = serving_config(**({"engine": kind} if kind else {}))
    url = url or config.engine_url()
    if config.engine == "llama_cpp":
        from rl.deploy.llama_cpp_registry import LlamaCppServerEngine

        return LlamaCppServerEngine(url, settings.RL_LLAMA_CPP_MODELS_FILE)
    if config.engine == "vllm":
        from rl.deploy.vllm_registry import VllmEngine

        return VllmEngine(url, settings.OPENAI_API_KEY, config.timeout_seconds)
    from rl.deploy.ollama_registry import OllamaEngine

    return OllamaEngine(url)
