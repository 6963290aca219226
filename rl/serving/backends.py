"""The two ways a pick is asked: Ollama's /api/chat, and the OpenAI chat-completions API that llama.cpp's server,
vLLM and SGLang speak. Both send the same messages and answer schema, and map the same failures to the same
ServingErrors (down: 503, timeout: 504, refused: 502)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rl.core.config import ServingConfig
from rl.serving.confidence import widget_probability
from rl.serving.errors import EngineDown, EngineRefused, EngineTimeout


@dataclass(frozen=True)
class EngineReply:
    text: str
    confidence: float | None = None  # probability of the chosen widget's tokens, where the engine reports log-probs


class ChatBackend(Protocol):
    def ask(self, model: str, messages: list[dict[str, str]], schema: dict[str, Any]) -> EngineReply: ...


@dataclass(frozen=True)
class OllamaChat:
    """Ollama's /api/chat through the official `ollama` client; the schema goes as `format`."""

    url: str
    config: ServingConfig

    def ask(self, model: str, messages: list[dict[str, str]], schema: dict[str, Any]) -> EngineReply:
        import httpx
        import ollama

        client = ollama.Client(host=self.url, timeout=self.config.timeout_seconds)
        try:
            response = client.chat(model=model, messages=messages, format=schema, stream=False,
                                   options={"temperature": self.config.temperature, "num_predict": self.config.max_tokens})
        except httpx.TimeoutException as exc:
            raise EngineTimeout(f"Ollama at {self.url} did not answer within {self.config.timeout_seconds:g} s ({model}).",
                                model_version=model) from exc
        except (httpx.ConnectError, ConnectionError) as exc:
            raise EngineDown(f"Ollama at {self.url} is unreachable ({exc}).", model_version=model) from exc
        except ollama.ResponseError as exc:
            raise EngineRefused(f"Ollama at {self.url} refused the request for {model}: {exc.error} (HTTP {exc.status_code}).",
                                model_version=model) from exc
        return EngineReply(response.message.content or "")


def response_format(schema: dict[str, Any], form: str) -> dict[str, Any]:
    """The chat-completions `response_format` that decodes under `schema`, in the form the engine reads."""
    if form == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}}


@dataclass(frozen=True)
class OpenAIChat:
    """`POST {OPENAI_BASE_URL}/chat/completions` through the official `openai` client, the schema in `response_format`.

    llama-cpp-python's server answers a model name it does not know with its first model instead of an error, so for
    that engine the model is first looked up in /v1/models: an entry must never be credited to a version that did not
    answer it."""

    url: str
    config: ServingConfig
    api_key: str = "no-key"

    def http_client(self) -> Any:
        import httpx

        return httpx.Client()

    def client(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url, api_key=self.api_key, timeout=self.config.timeout_seconds, max_retries=0,
                             http_client=self.http_client())

    def ask(self, model: str, messages: list[dict[str, str]], schema: dict[str, Any]) -> EngineReply:
        import openai

        client = self.client()
        # top_logprobs too: llama-cpp-python returns no log-probs without it.
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": 1} if self.config.logprobs else {}
        try:
            if self.config.engine == "llama_cpp" and model not in {m.id for m in client.models.list()}:
                raise EngineRefused(f"The engine at {self.url} does not serve {model}; it serves what its models file named "
                                    "when it last started (manage.py serve_llama_cpp restarts it when the file changes).",
                                    model_version=model)
            completion = client.chat.completions.create(
                model=model, messages=messages, temperature=self.config.temperature, max_tokens=self.config.max_tokens,
                response_format=response_format(schema, self.config.openai_schema_format), **extra)
        except openai.APITimeoutError as exc:
            raise EngineTimeout(f"The engine at {self.url} did not answer within {self.config.timeout_seconds:g} s ({model}).",
                                model_version=model) from exc
        except openai.APIConnectionError as exc:
            raise EngineDown(f"The engine at {self.url} is unreachable ({exc.__cause__ or exc}).", model_version=model) from exc
        except openai.APIStatusError as exc:
            raise EngineRefused(f"The engine at {self.url} refused the request for {model}: HTTP {exc.status_code} "
                                f"{_error_text(exc)}", model_version=model) from exc
        choice = completion.choices[0]
        text = choice.message.content or ""
        confidence = None
        if choice.logprobs is not None and choice.logprobs.content:
            confidence = widget_probability(text, [(t.token, t.logprob) for t in choice.logprobs.content])
        return EngineReply(text, confidence)


def _error_text(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or body.get("detail") or exc.message)[:300]


def chat_backend(config: ServingConfig, url: str | None = None) -> ChatBackend:
    """The backend the configured engine is asked through, at `url` or the engine's configured address."""
    from django.conf import settings

    url = url or config.engine_url()
    if config.api == "openai":
        return OpenAIChat(url, config, settings.OPENAI_API_KEY)
    return OllamaChat(url, config)
