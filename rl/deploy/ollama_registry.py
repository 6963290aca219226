"""Ollama through the official `ollama` client: register a GGUF (upload the blob, create the model), point an alias."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl.deploy.engines import EngineUnavailable, RegistrationError

logger = logging.getLogger(__name__)



def _client(host: str) -> Any:
    import ollama

    return ollama.Client(host=host, timeout=600)


def register_gguf(*, host: str, model: str, gguf_path: str | Path, template: str, system: str, parameters: dict[str, Any]) -> dict[str, str]:
    """Upload `gguf_path` (its sha256 is the blob's name) and create `model` from it; returns the digest and status."""
    import httpx
    import ollama

    client = _client(host)
    gguf_path = Path(gguf_path)
    try:
        digest = client.create_blob(gguf_path)
        response = client.create(
            model=model, files={gguf_path.name: digest}, template=template, system=system, parameters=parameters, stream=False,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError) as exc:
        raise EngineUnavailable(f"Ollama at {host} is unreachable ({exc}); nothing was registered.") from exc
    except ollama.ResponseError as exc:
        raise RegistrationError(f"Ollama at {host} refused {model}: {exc.error} (HTTP {exc.status_code}).") from exc
    if getattr(response, "status", None) != "success":
        raise RegistrationError(f"Ollama at {host} did not confirm {model}: {response!r}")
    logger.info("Registered %s with Ollama at %s (blob %s)", model, host, digest)
    return {"digest": digest, "status": response.status}


def registered_models(host: str) -> dict[str, str]:
    """Every model Ollama has, by name, with the digest of its weights."""
    import httpx

    try:
        return {m.model: m.digest for m in _client(host).list().models}
    except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError) as exc:
        raise EngineUnavailable(f"Ollama at {host} is unreachable ({exc}).") from exc


def point_alias(host: str, source: str, alias: str) -> None:
    """Make `alias` a copy of `source` (Ollama's /api/copy), replacing what it pointed at."""
    import httpx
    import ollama

    try:
        _client(host).copy(source, alias)
    except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError) as exc:
        raise EngineUnavailable(f"Ollama at {host} is unreachable ({exc}); {alias} still points where it did.") from exc
    except ollama.ResponseError as exc:
        raise RegistrationError(f"Ollama at {host} refused to copy {source} to {alias}: {exc.error} (HTTP {exc.status_code}).") from exc
    logger.info("Ollama at %s: %s now points at %s", host, alias, source)


@dataclass(frozen=True)
class OllamaEngine:
    """A version is its merged GGUF created as an Ollama model with the export's TEMPLATE, SYSTEM and PARAMETERs."""

    url: str
    kind: str = "ollama"

    def register(self, version: Any, chat_family: str, template: str, parameters: dict[str, Any]) -> dict[str, str]:
        from rl.core.prompts import SYSTEM_PROMPT

        return register_gguf(host=self.url, model=version.ollama_name, gguf_path=version.gguf_path, template=template,
                             system=SYSTEM_PROMPT, parameters=parameters)

    def point_alias(self, version: Any, alias: str) -> None:
        point_alias(self.url, version.ollama_name, alias)

    def retire(self, version: Any) -> None:
        import httpx
        import ollama

        try:
            _client(self.url).delete(version.ollama_name)
        except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError) as exc:
            raise EngineUnavailable(f"Ollama at {self.url} is unreachable ({exc}).") from exc
        except ollama.ResponseError as exc:
            if exc.status_code != 404:
                raise RegistrationError(f"Ollama at {self.url} refused to delete {version.ollama_name}: {exc.error}.") from exc
