"""Registering a GGUF with Ollama through the official `ollama` client: upload the blob, then create the model."""
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


def registered_models(host: str) -> list[str]:
    import httpx

    try:
        return [m.model for m in _client(host).list().models]
    except (httpx.ConnectError, httpx.ConnectTimeout, ConnectionError) as exc:
        raise OllamaUnavailable(f"Ollama at {host} is unreachable ({exc}).") from exc
