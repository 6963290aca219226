"""Ollama through the official `ollama` client: register a GGUF (upload the blob, create the model), point an alias."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class OllamaUnavailable(RuntimeError):
    """Ollama did not answer; nothing was registered."""


class RegistrationError(RuntimeError):
    """Ollama answered but refused the model."""


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
        raise OllamaUnavailable(f"Ollama at {host} is unreachable ({exc}); nothing was registered.") from exc
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
        raise OllamaUnavailable(f"Ollama at {host} is unreachable ({exc}).") from exc


def point_alias(host: str, source: str, alias: str) -> None:
    """Make `alias` a copy of `source` (Ollama's /api/copy), replacing what it pointed at."""
    import httpx
    import ollama

    try:
        _client(host).copy(source, alias)
    except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError) as exc:
        raise OllamaUnavailable(f"Ollama at {host} is unreachable ({exc}); {alias} still points where it did.") from exc
    except ollama.ResponseError as exc:
        raise RegistrationError(f"Ollama at {host} refused to copy {source} to {alias}: {exc.error} (HTTP {exc.status_code}).") from exc
    logger.info("Ollama at %s: %s now points at %s", host, alias, source)
