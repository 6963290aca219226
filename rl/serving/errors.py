"""What can go wrong when a pick is served, as the API answers it. Raised before anything is stored."""
from __future__ import annotations


class ServingError(RuntimeError):
    """A pick could not be served; nothing was stored. `code` and `http_status` are what the API answers."""

    code = "serving_error"
    http_status = 500

    def __init__(self, message: str, *, model_version: str = ""):
        super().__init__(message)
        self.model_version = model_version


class NoLiveModel(ServingError):
    code, http_status = "no_live_model", 503


class EngineDown(ServingError):
    """No connection to the serving engine (Ollama or an OpenAI-compatible server)."""

    code, http_status = "engine_unavailable", 503


class EngineTimeout(ServingError):
    code, http_status = "engine_timeout", 504


class EngineRefused(ServingError):
    """The engine answered with an error: the model is not there, a bad request, a server fault."""

    code, http_status = "engine_error", 502


class UnusableAnswer(ServingError):
    code, http_status = "unparseable_answer", 502
