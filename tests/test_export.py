"""Export on a tiny trained adapter: merge, GGUF, quantize, verify, and registration with a SIMULATED Ollama."""
import hashlib

import jinja2
import ollama
import pytest
from django.core.management import CommandError, call_command

from rl.core.prompts import SYSTEM_PROMPT, ScenarioText, build_messages
from rl.core.runs import CheckpointError
from rl.deploy.registration import export_and_register
from rl.export.exporter import ExportError, export_to_ollama
from rl.export.modelfile import CHATML, LLAMA3, TemplateError, chat_format, modelfile_text, render_go_template, template_parity
from rl.export.quantize import QuantizationError
from rl.models import ModelVersion
from tests.conftest import closed_port_url
from tests.rl_cases import CATALOG


def test_an_export_is_verified_and_registered_with_its_blob_digest(tiny_run, simulated_ollama, checkpoints):
    result = export_and_register(tiny_run, quantization="q8_0", ollama_host=simulated_ollama.url, check_pick=False)
    assert result.status == "registered", result.message
    assert result.verification["argmax_agreement"] >= 0.95 and result.verification["template_parity"] is True
    gguf_file = checkpoints / "tiny" / "exports" / "q8_0" / "model-q8_0.gguf"
    digest = "sha256:" + hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    model = simulated_ollama.models["cc-widget-selector:tiny"]
    assert model["digest"] == digest == f"sha256:{result.sha256}"
    assert model["template"] == CHATML.template and model["system"] == SYSTEM_PROMPT
    assert model["parameters"]["stop"] == ["<|im_start|>", "<|im_end|>"]
    shown = ollama.Client(host=simulated_ollama.url).show("cc-widget-selector:tiny")
    assert shown.template == CHATML.template
    assert [m.model for m in ollama.Client(host=simulated_ollama.url).list().models] == ["cc-widget-selector:tiny"]
    version = ModelVersion.objects.get(tag="tiny")
    assert version.status == "registered" and version.size_bytes == gguf_file.stat().st_size
    modelfile = (checkpoints / "tiny" / "exports" / "q8_0" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_ollama_down_keeps_the_export_and_register_only_retries(tiny_run, simulated_ollama):
    result = export_and_register(tiny_run, quantization="f16", ollama_host=closed_port_url(), check_pick=False)
    assert result.status == "exported"
    assert "unreachable" in result.message and "--register-only" in result.message
    call_command("export_model", "--checkpoint", tiny_run, "--quantization", "f16", "--register-only", "--ollama-host", simulated_ollama.url)
    assert ModelVersion.objects.get(tag="tiny").status == "registered"
    assert "cc-widget-selector:tiny" in simulated_ollama.models


def test_a_failed_verification_rejects_the_export_and_registers_nothing(tiny_run, simulated_ollama, tmp_path):
    # A TEMPLATE that drops the newline after each role renders prompts unlike the chat template: the parity check fails.
    from rl.export.modelfile import CHATML

    wrong = tmp_path / "wrong.tmpl"
    wrong.write_text(CHATML.template.replace("{{ .Role }}\n", "{{ .Role }}"))
    with pytest.raises(CommandError, match="does not render prompts as the tokenizer's chat template does"):
        call_command("export_model", "--checkpoint", tiny_run, "--quantization", "q8_0", "--register", "--ollama-host", simulated_ollama.url,
                     "--template-file", str(wrong))
    assert ModelVersion.objects.get(tag="tiny").status == "rejected"
    assert simulated_ollama.models == {} and simulated_ollama.blobs == {}
    with pytest.raises(ExportError, match="failed verification"):
        from rl.deploy.registration import register_version

        register_version(ModelVersion.objects.get(tag="tiny"))


def test_unknown_quantization_or_missing_checkpoint_changes_nothing(tiny_run, simulated_ollama, tmp_path):
    with pytest.raises(QuantizationError, match="Unknown quantization 'q9_9'"):
        export_to_ollama(tiny_run, quantization="q9_9", ollama_host=simulated_ollama.url)
    with pytest.raises(CheckpointError, match="No trained adapter"):
        export_to_ollama(tmp_path / "nothing", ollama_host=simulated_ollama.url)
    assert not ModelVersion.objects.exists() and simulated_ollama.models == {}


def test_the_quantized_gguf_reports_k_quant_fallbacks_in_one_line_not_a_line_per_tensor(tiny_run, simulated_ollama, capfd):
    result = export_to_ollama(tiny_run, quantization="q4_k_m", check_pick=False)
    assert result.status == "exported"
    # hidden size 64 is not a multiple of 256: llama.cpp stores those tensors in legacy types instead of K-quants
    assert result.quantize["fallback_tensors"] > 0 and "not a multiple of 256" in result.quantize["note"]
    printed = capfd.readouterr()
    assert "falling back to" not in printed.err + printed.out  # llama.cpp's own per-tensor warnings, written from C


def test_the_simulated_ollama_refuses_a_blob_whose_digest_does_not_match(simulated_ollama, tmp_path):
    import httpx

    response = httpx.post(f"{simulated_ollama.url}/api/blobs/sha256:{'0' * 64}", content=b"GGUF not the right bytes")
    assert response.status_code == 400
    with pytest.raises(ollama.ResponseError, match="never uploaded"):
        ollama.Client(host=simulated_ollama.url).create(model="m:x", files={"m.gguf": "sha256:" + "1" * 64})


LLAMA3_JINJA = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


class Llama3StyleTokenizer:
    """A stand-in with Llama 3's chat template (its real tokenizer cannot be downloaded here)."""

    chat_template = LLAMA3_JINJA
    eos_token = "<|eot_id|>"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        return jinja2.Template(self.chat_template).render(messages=messages, bos_token="<|begin_of_text|>", add_generation_prompt=add_generation_prompt)


MESSAGES = build_messages(ScenarioText("How has chiller 1 power trended this week?", "HQ", "operator", "last 7 days"), CATALOG)


def test_the_chatml_template_renders_exactly_like_smollm2_s_chat_template():
    from rl.core.base_model import load_tokenizer

    tokenizer = load_tokenizer()
    assert chat_format(tokenizer) is CHATML
    ok, rendered, expected = template_parity(tokenizer, CHATML, MESSAGES)
    assert ok, (rendered, expected)


def test_the_llama3_template_renders_exactly_like_llama3_s_chat_template():
    tokenizer = Llama3StyleTokenizer()
    assert chat_format(tokenizer) is LLAMA3
    ok, rendered, expected = template_parity(tokenizer, LLAMA3, MESSAGES)
    assert ok, (rendered, expected)
    assert rendered.startswith("<|start_header_id|>system<|end_header_id|>\n\n")


def test_a_template_that_differs_is_caught():
    ok, _, _ = template_parity(Llama3StyleTokenizer(), CHATML, MESSAGES)
    assert not ok


def test_an_unknown_chat_template_needs_a_template_file(tmp_path):
    class Unknown:
        chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"

    with pytest.raises(TemplateError, match="--template-file"):
        chat_format(Unknown())


def test_the_go_template_subset_handles_conditions_and_trimming():
    template = "{{- if .System }}S:{{ .System }}\n{{ end }}{{- range .Messages }}{{ .Role }}={{ .Content }};{{ end }}"
    assert render_go_template(template, [{"role": "user", "content": "hi"}], system="sys") == "S:sys\nuser=hi;"
    assert render_go_template(template, [{"role": "user", "content": "hi"}]) == "user=hi;"


def test_the_modelfile_sends_template_stops_system_and_a_low_temperature():
    text = modelfile_text("model-q4_k_m.gguf", CHATML)
    assert text.splitlines()[0] == "FROM ./model-q4_k_m.gguf"
    assert f'TEMPLATE """{CHATML.template}"""' in text and f'SYSTEM """{SYSTEM_PROMPT}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.1" in text


def test_train_dpo_export_registers_nothing_when_verification_fails(demo_db, tiny_model_dir, checkpoints, simulated_ollama, settings,
                                                                    monkeypatch):
    settings.OLLAMA_HOST = simulated_ollama.url
    # Ask for more agreement than is possible, so the real llama.cpp-vs-PyTorch check reports a failed conversion.
    monkeypatch.setattr("rl.export.verify.MIN_ARGMAX_AGREEMENT", 1.01)
    with pytest.raises(CommandError, match="export failed verification"):
        call_command("train_dpo", "--config", "cpu", "--base-model", str(tiny_model_dir), "--max-steps", "1", "--min-samples", "10",
                     "--max-train-pairs", "8", "--max-eval-pairs", "4", "--pick-eval-scenarios", "0", "--run-name", "tiny-export", "--export",
                     "--register-ollama", "--quantization", "q8_0")
    from rl.models import TrainingRun

    assert TrainingRun.objects.get(name="tiny-export").status == "succeeded"
    assert ModelVersion.objects.get(tag="tiny-export").status == "rejected"
    assert simulated_ollama.models == {}


def test_the_simulated_ollama_copies_shows_and_deletes_like_ollama(tiny_run, simulated_ollama):
    export_and_register(tiny_run, quantization="f16", ollama_host=simulated_ollama.url, check_pick=False)
    client = ollama.Client(host=simulated_ollama.url)
    client.copy("cc-widget-selector:tiny", "cc-widget-selector:active")
    assert {m.model for m in client.list().models} == {"cc-widget-selector:tiny", "cc-widget-selector:active"}
    client.delete("cc-widget-selector:tiny")
    assert [m.model for m in client.list().models] == ["cc-widget-selector:active"]
    with pytest.raises(ollama.ResponseError):
        client.show("cc-widget-selector:tiny")


def test_the_pick_check_decodes_under_the_answer_schema_as_served(tiny_run, checkpoints):
    # Free decoding, a tiny random model answers garbage; under the schema (as Ollama is asked) it must give a pick.
    from rl.core.prompts import parse_pick
    from rl.serving.picks import current_catalog

    result = export_to_ollama(tiny_run, quantization="q8_0", check_pick=True)
    assert result.verification["pick_parsed"] is True, result.verification
    assert parse_pick(result.verification["pick_answer"], current_catalog()).widget
