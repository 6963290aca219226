"""The vLLM path against a RECORDED exchange (tests/recorded/vllm_lora_exchange.json, replayed by
tests/recorded_engine.py): vLLM needs a GPU and cannot run here, so these tests prove the shapes the project sends
(adapter loading, the alias, unloading, a pick under a json_schema response_format with log-probs) and how it reads
the answers."""
import math
from pathlib import Path

import pytest

from feedback.models import Entry, Scenario
from rl.deploy.engines import RegistrationError, serving_engine
from rl.models import ModelVersion
from rl.serving.picks import pick_widget
from tests.recorded_engine import ReplayServer

RECORD = Path(__file__).parent / "recorded" / "vllm_lora_exchange.json"


@pytest.fixture
def adapter_version(demo_db, tmp_path):
    adapter = tmp_path / "run-a" / "final"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    return ModelVersion.objects.create(name="cc-widget-selector", tag="run-a", quantization="lora", export_dir=str(adapter),
                                       gguf_path="", adapter_path=str(adapter), status=ModelVersion.Status.ACTIVE, engine="vllm")


def test_the_vllm_engine_loads_aliases_and_unloads_adapters_and_serves_a_pick_as_recorded(adapter_version, settings):
    with ReplayServer(RECORD) as vllm:
        settings.OPENAI_BASE_URL, settings.RL_SERVING = vllm.url, {"engine": "vllm"}
        engine = serving_engine()
        engine.register(adapter_version, "chatml", "", {})
        engine.register(adapter_version, "chatml", "", {})  # loaded already: vLLM says so, and that is fine
        engine.point_alias(adapter_version, "cc-widget-selector:live")  # nothing to unload yet: a 404, fine
        engine.retire(adapter_version)
        site = Scenario.objects.order_by("external_id").first().site
        served = pick_widget(Scenario(query="how warm is it in the server room right now?", site=site, role="operator", time_range="now"))
        assert vllm.problems == [] and vllm.position == len(vllm.exchanges)
    entry = Entry.objects.get(external_id=served.entry.external_id)
    assert (entry.widget.slug, entry.fixture_slugs(), entry.model_version) == ("line_chart", ["dc_battery_room_temp"], "cc-widget-selector:run-a")
    assert entry.confidence == pytest.approx(math.exp(-0.353))  # the recorded log-probs of "line", "_", "chart"


def test_a_version_without_an_adapter_folder_is_refused_before_vllm_is_asked(adapter_version, settings):
    adapter_version.adapter_path = ""
    with ReplayServer(RECORD) as vllm:
        settings.OPENAI_BASE_URL, settings.RL_SERVING = vllm.url, {"engine": "vllm"}
        with pytest.raises(RegistrationError, match="no LoRA adapter folder"):
            serving_engine().register(adapter_version, "chatml", "", {})
        assert vllm.position == 0


def test_the_replay_catches_a_request_of_another_shape(adapter_version, settings):
    with ReplayServer(RECORD) as vllm:
        settings.OPENAI_BASE_URL, settings.RL_SERVING = vllm.url, {"engine": "vllm"}
        serving_engine().load("cc-widget-selector:run-a", 42)  # a number where the record has a path
        assert vllm.problems == ["request 1: $.lora_path: expected a <path>, got 42"]


def test_export_model_with_quantization_lora_records_the_adapter_itself(tiny_run, capsys):
    from django.core.management import call_command

    from rl.core.base_model import file_sha256

    call_command("export_model", "--checkpoint", tiny_run, "--quantization", "lora")
    version = ModelVersion.objects.get(quantization="lora")
    adapter = Path(version.adapter_path)
    assert (version.ollama_name, version.status, version.gguf_path) == ("cc-widget-selector:tiny", "exported", "")
    assert (adapter / "adapter_config.json").is_file() and version.sha256 == file_sha256(adapter / "adapter_model.safetensors")
    assert not list(adapter.parent.glob("exports/*"))  # nothing merged, converted or quantized
    assert "status: exported" in capsys.readouterr().out
