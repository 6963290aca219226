"""Registration with llama.cpp's server (RL_SERVING engine llama_cpp): the project writes the server's models file, and
the REAL server (llama-cpp-python's, run by rl/serving/llama_cpp_server.py as `manage.py serve_llama_cpp` runs it)
serves what the file names after it restarts on the change."""
import json
import threading
from types import SimpleNamespace

import pytest
from django.core.management import CommandError, call_command

from feedback.models import Entry, Scenario
from rl.core.base_model import default_base_model, file_sha256
from rl.deploy.llama_cpp_registry import LlamaCppServerEngine, ModelsFile
from rl.deploy.registry import activate, live_version, rollback
from rl.models import ModelVersion
from rl.serving.llama_cpp_server import EngineStartError, LlamaCppServer
from rl.serving.picks import pick_widget
from tests.conftest import free_port


@pytest.fixture
def llama_cpp_settings(settings, tmp_path):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.RL_LLAMA_CPP_MODELS_FILE = tmp_path / "serving" / "models.json"
    settings.RL_SERVING = {"engine": "llama_cpp"}
    return settings


def exported_version(tag: str) -> ModelVersion:
    from pathlib import Path

    gguf = Path(default_base_model())
    return ModelVersion.objects.create(name="cc-widget-selector", tag=tag, quantization="q4_1", export_dir="", gguf_path=str(gguf),
                                       sha256=file_sha256(gguf), status=ModelVersion.Status.EXPORTED)


def question() -> Scenario:
    return Scenario(query="is AHU-2 running?", site=Scenario.objects.order_by("external_id").first().site, role="operator", time_range="now")


def test_activation_writes_the_models_file_and_the_restarted_server_serves_the_new_version(demo_db, llama_cpp_settings):
    models_file = ModelsFile(llama_cpp_settings.RL_LLAMA_CPP_MODELS_FILE)
    one, two = exported_version("one"), exported_version("two")
    activate(one, by="test")
    content = models_file.read()
    assert (content["host"], content["port"]) == ("127.0.0.1", int(llama_cpp_settings.OPENAI_BASE_URL.split(":")[2].split("/")[0]))
    assert [m["model_alias"] for m in content["models"]] == ["cc-widget-selector:live", "cc-widget-selector:one"]
    assert {m["model"] for m in content["models"]} == {one.gguf_path} and {m["chat_format"] for m in content["models"]} == {"chatml"}
    one.refresh_from_db()
    assert (one.status, one.engine, one.ollama_host) == ("active", "llama_cpp", llama_cpp_settings.OPENAI_BASE_URL)

    stop = threading.Event()
    with LlamaCppServer(models_file.path) as server:
        assert pick_widget(question()).model_version == "cc-widget-selector:one"
        watcher = threading.Thread(target=server.watch, args=(stop, 0.1))
        watcher.start()
        try:
            activate(two, by="test")
            assert models_file.aliases()["cc-widget-selector:live"] == two.gguf_path
            server.wait_ready({"cc-widget-selector:two"})  # the watcher restarted it on the file's change
            served = pick_widget(question())
            assert served.model_version == "cc-widget-selector:two" == Entry.objects.get(external_id=served.entry.external_id).model_version
            assert server.restarts >= 1
        finally:
            stop.set()
            watcher.join()
    rollback(by="test")
    assert live_version().tag == "one"
    assert [m["model_alias"] for m in models_file.read()["models"]][0] == "cc-widget-selector:live"


def test_registrations_at_the_same_moment_both_land_in_the_file(tmp_path):
    engine = LlamaCppServerEngine("http://127.0.0.1:8080/v1", tmp_path / "models.json")
    gguf = str(default_base_model())
    threads = [threading.Thread(target=engine.register, args=(SimpleNamespace(ollama_name=f"m:{i}", gguf_path=gguf), "chatml", "", {}))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(engine.models_file.aliases()) == sorted(f"m:{i}" for i in range(8))
    assert not list(tmp_path.glob(".models-*"))  # no temporary file left behind


def test_a_models_file_that_cannot_be_written_changes_nothing(demo_db, llama_cpp_settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    llama_cpp_settings.RL_LLAMA_CPP_MODELS_FILE = blocker / "models.json"
    version = exported_version("one")
    with pytest.raises(CommandError, match="Cannot write llama.cpp's models file"):
        call_command("activate_model", "cc-widget-selector:one")
    version.refresh_from_db()
    assert (version.status, version.engine) == ("exported", "") and live_version() is None


def test_the_server_will_not_start_on_a_file_that_names_no_model(tmp_path):
    (tmp_path / "models.json").write_text(json.dumps({"host": "127.0.0.1", "port": free_port(), "models": []}))
    with pytest.raises(EngineStartError, match="names no model yet"):
        LlamaCppServer(tmp_path / "models.json").start()


def test_serve_llama_cpp_explains_itself(capsys):
    with pytest.raises(SystemExit):
        call_command("serve_llama_cpp", "--help")
    assert "restart it whenever that file changes" in capsys.readouterr().out


def test_retiring_drops_the_version_from_the_models_file_and_refuses_the_live_one(demo_db, llama_cpp_settings):
    models_file = ModelsFile(llama_cpp_settings.RL_LLAMA_CPP_MODELS_FILE)
    one, two = exported_version("one"), exported_version("two")
    activate(one, by="test")
    activate(two, by="test")
    with pytest.raises(CommandError, match="is live"):
        call_command("retire_model", "cc-widget-selector:two")
    call_command("retire_model", "cc-widget-selector:one")
    one.refresh_from_db()
    assert one.status == "retired" and "cc-widget-selector:one" not in models_file.aliases()
    assert set(models_file.aliases()) == {"cc-widget-selector:live", "cc-widget-selector:two"}
