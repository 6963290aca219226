from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from feedback.demo import build_demo
from feedback.files import FeedbackData, FeedbackRatings
from feedback.services import feedback_import

DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup", "live_server"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--database-tests-only", action="store_true",
                     help="Run only the tests that touch the database (make test's PostgreSQL pass).")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--database-tests-only"):
        return
    keep = [item for item in items if item.get_closest_marker("django_db") or item.get_closest_marker("database_processes")
            or DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def demo_files() -> tuple[FeedbackData, FeedbackRatings]:
    """A small demo (12 scenarios) as the two import files."""
    return build_demo(seed=5, scenario_count=12)


@pytest.fixture
def demo_paths(tmp_path, demo_files):
    """The small demo written as a data file and a ratings file."""
    from feedback.files import write_json

    data, ratings = demo_files
    write_json(tmp_path / "data.json", data)
    write_json(tmp_path / "ratings.json", ratings)
    return tmp_path / "data.json", tmp_path / "ratings.json"


@pytest.fixture
def demo_db(db, demo_files):
    data, ratings = demo_files
    feedback_import(data, ratings)
    return demo_files


@pytest.fixture
def rater(db):
    return get_user_model().objects.create_user("alice", password="alice-password-123")


@pytest.fixture
def api(rater) -> APIClient:
    client = APIClient()
    client.force_authenticate(rater)
    return client


@pytest.fixture
def production_app(db) -> APIClient:
    """The production app's account: may create entries and serve picks (the feedback.add_entry permission)."""
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("command-center-app", password="app-password-123")
    user.user_permissions.add(Permission.objects.get(codename="add_entry", content_type__app_label="feedback"))
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama (2 layers, hidden 64) with SmolLM2's tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rl.core.base_model import load_tokenizer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def checkpoints(settings, tmp_path):
    settings.RL_CHECKPOINT_DIR = tmp_path / "runs"
    return tmp_path / "runs"


@pytest.fixture
def tiny_run(demo_db, tiny_model_dir, checkpoints):
    from rl.training.run import run_training
    from tests.rl_cases import data, tiny_config

    result = run_training(tiny_config(tiny_model_dir, max_steps=2), data(), preset="cpu", run_name="tiny")
    assert result.status == "succeeded", result.error
    return "tiny"


def closed_port_url() -> str:
    """A loopback URL nothing listens on: Ollama down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def simulated_ollama():
    """The SIMULATED Ollama server (rl/simulated/ollama.py) on loopback."""
    from rl.simulated.ollama import SimulatedOllama

    with SimulatedOllama() as server:
        yield server


@pytest.fixture
def served_versions(demo_db, simulated_ollama, settings):
    """The SmolLM2 GGUF registered with the SIMULATED Ollama twice, as the live version and as a registered candidate."""
    from rl.core.base_model import default_base_model
    from rl.core.prompts import SYSTEM_PROMPT
    from rl.deploy.ollama_registry import register_gguf
    from rl.export.modelfile import CHATML, ollama_parameters
    from rl.models import ModelVersion

    settings.OLLAMA_HOST = simulated_ollama.url
    settings.RL_SERVING = {}
    gguf = default_base_model()
    versions = {}
    for tag, status in (("live-one", ModelVersion.Status.ACTIVE), ("candidate-one", ModelVersion.Status.REGISTERED)):
        register_gguf(host=simulated_ollama.url, model=f"cc-widget-selector:{tag}", gguf_path=gguf, template=CHATML.template,
                      system=SYSTEM_PROMPT, parameters=ollama_parameters(CHATML))
        versions[tag] = ModelVersion.objects.create(name="cc-widget-selector", tag=tag, status=status, quantization="q4_1",
                                                    export_dir="", gguf_path=gguf, ollama_host=simulated_ollama.url)
    return versions["live-one"], versions["candidate-one"]


@pytest.fixture(autouse=True)
def _own_base_score_cache(settings, tmp_path):
    """Every test starts with no cached base scores (a test that wants them reused runs twice in itself)."""
    settings.RL_BASE_SCORES_DIR = tmp_path / "base-scores"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts(request):
    """Throttle counts and lockouts live in the cache, a database table: a test that uses the database starts with
    none (user ids repeat across tests); the others cannot reach it and need none."""
    marker, names = request.node.get_closest_marker("django_db"), set(request.fixturenames)
    if "transactional_db" in names or "live_server" in names or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
    elif marker or DATABASE_FIXTURES & names:
        request.getfixturevalue("db")
    else:
        return
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def process_database_url(tmp_path):
    """A database for tests that start their own processes: a fresh SQLite file, or, when DATABASE_URL names
    PostgreSQL (make test's second pass), a fresh PostgreSQL database dropped afterwards."""
    from tests.databases import throwaway_database

    configured = os.environ.get("DATABASE_URL", "")
    with throwaway_database(configured if configured.startswith(("postgres://", "postgresql://")) else None, tmp_path) as url:
        yield url


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVED_TAGS = ("live-one", "candidate-one")


@pytest.fixture(scope="session")
def llama_cpp_server(tmp_path_factory):
    """The REAL llama.cpp OpenAI-compatible server (llama-cpp-python's, as `manage.py serve_llama_cpp` runs it) on
    loopback, its models file written by the project's llama_cpp registrar: the SmolLM2 GGUF under both served names."""
    from types import SimpleNamespace

    from rl.core.base_model import default_base_model
    from rl.deploy.llama_cpp_registry import LlamaCppServerEngine
    from rl.serving.llama_cpp_server import LlamaCppServer

    folder = tmp_path_factory.mktemp("llama-cpp-server")
    engine = LlamaCppServerEngine(f"http://127.0.0.1:{free_port()}/v1", folder / "models.json")
    for tag in SERVED_TAGS:
        engine.register(SimpleNamespace(ollama_name=f"cc-widget-selector:{tag}", gguf_path=str(default_base_model())), "chatml", "", {})
    with LlamaCppServer(engine.models_file.path, log_path=folder / "server.log") as server:
        yield server


@dataclass
class EngineUnderTest:
    """A serving engine the serving tests run against, and the chat requests it was sent, each as
    {"model", "schema", "text"} (text: the messages' contents, or the prompt the simulated Ollama rendered)."""

    api: str  # ollama or openai
    url: str
    raw_requests: list[dict[str, Any]]
    simulated_ollama: Any = None

    @property
    def requests(self) -> list[dict[str, Any]]:
        if self.api == "ollama":
            return [{"model": c["model"], "schema": c["format"], "text": c["prompt"]} for c in self.raw_requests]
        return [{"model": r["model"], "schema": r["response_format"]["schema"], "text": "\n".join(m["content"] for m in r["messages"])}
                for r in self.raw_requests]

    def url_setting(self) -> str:
        return "OLLAMA_HOST" if self.api == "ollama" else "OPENAI_BASE_URL"


@pytest.fixture(params=["ollama", "openai"])
def serving_engine(request, settings, monkeypatch):
    """Each serving test twice: through Ollama's API (the SIMULATED Ollama, the SmolLM2 GGUF through llama.cpp) and
    through the OpenAI API (the REAL llama.cpp server, the same GGUF)."""
    import httpx

    from rl.serving.backends import OpenAIChat

    if request.param == "ollama":
        server = request.getfixturevalue("simulated_ollama")
        settings.OLLAMA_HOST, settings.RL_SERVING = server.url, {}
        yield EngineUnderTest("ollama", server.url, server.chats, simulated_ollama=server)
        return
    server = request.getfixturevalue("llama_cpp_server")
    settings.OPENAI_BASE_URL, settings.RL_SERVING = server.url, {"engine": "llama_cpp"}
    sent: list[dict[str, Any]] = []

    def recording_http_client(chat: OpenAIChat) -> Any:
        """The backend's HTTP client, with a hook that keeps each chat request's body."""
        def record(request: httpx.Request) -> None:
            if request.url.path.endswith("/chat/completions"):
                sent.append(json.loads(request.content))

        return httpx.Client(event_hooks={"request": [record]})

    monkeypatch.setattr(OpenAIChat, "http_client", recording_http_client)
    yield EngineUnderTest("openai", server.url, sent)


@pytest.fixture
def served_on(demo_db, serving_engine):
    """The live version and a registered candidate, both served by `serving_engine` (SERVED_TAGS)."""
    from rl.core.base_model import default_base_model
    from rl.core.prompts import SYSTEM_PROMPT
    from rl.deploy.ollama_registry import register_gguf
    from rl.export.modelfile import CHATML, ollama_parameters
    from rl.models import ModelVersion

    gguf = default_base_model()
    versions = []
    for tag, status in zip(SERVED_TAGS, (ModelVersion.Status.ACTIVE, ModelVersion.Status.REGISTERED)):
        name = f"cc-widget-selector:{tag}"
        if serving_engine.api == "ollama":
            register_gguf(host=serving_engine.url, model=name, gguf_path=gguf, template=CHATML.template, system=SYSTEM_PROMPT,
                          parameters=ollama_parameters(CHATML))
        versions.append(ModelVersion.objects.create(
            name="cc-widget-selector", tag=tag, status=status, quantization="q4_1", export_dir="", gguf_path=gguf,
            ollama_host=serving_engine.url, engine="ollama" if serving_engine.api == "ollama" else "llama_cpp"))
    return tuple(versions)
