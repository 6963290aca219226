"""Model registry: activate and rollback through a SIMULATED Ollama; exactly one live version, the alias where the records say."""
import hashlib

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from rl.deploy.engines import EngineUnavailable
from rl.deploy.registry import RegistryError, activate, find_version, live_version, rollback
from rl.models import Deployment, ModelVersion
from tests.conftest import closed_port_url

ALIAS = "cc-widget-selector:live"


@pytest.fixture
def versions(db, tmp_path, settings, simulated_ollama):
    """Three exported versions, each with its own small GGUF file (a GGUF header and distinct bytes)."""
    settings.OLLAMA_HOST = simulated_ollama.url
    made = []
    for tag in ("run-a", "run-b", "run-c"):
        path = tmp_path / f"{tag}.gguf"
        path.write_bytes(b"GGUF" + tag.encode() * 64)
        made.append(ModelVersion.objects.create(
            name="cc-widget-selector", tag=tag, quantization="q4_k_m", export_dir=str(tmp_path), gguf_path=str(path),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size_bytes=path.stat().st_size, status="exported"))
    return made


def alias_digest(simulated_ollama) -> str | None:
    model = simulated_ollama.models.get(ALIAS)
    return model["digest"] if model else None


def assert_records_match_alias(simulated_ollama) -> ModelVersion:
    active = list(ModelVersion.objects.filter(status="active"))
    assert len(active) == 1
    assert alias_digest(simulated_ollama) == f"sha256:{active[0].sha256}"
    return active[0]


def test_activate_registers_points_the_alias_and_keeps_one_live_version(versions, simulated_ollama):
    a, b, _ = versions
    first = activate(a, by="tester")
    assert first.previous is None and first.alias == ALIAS
    assert assert_records_match_alias(simulated_ollama) == a
    assert "cc-widget-selector:run-a" in simulated_ollama.models  # registered on the way
    second = activate(b, by="tester", reason="better")
    assert second.previous == a
    assert assert_records_match_alias(simulated_ollama) == b
    a.refresh_from_db()
    assert a.status == "registered" and live_version() == b


def test_rollback_goes_back_to_the_previous_version_and_records_it(versions, simulated_ollama):
    a, b, c = versions
    for version in (a, b, c):
        activate(version, by="tester")
    deployment = rollback(by="tester")
    assert deployment.action == "rollback" and deployment.version == b and deployment.previous == c
    assert assert_records_match_alias(simulated_ollama) == b
    call_command("rollback_model")  # b replaced c by rollback, so rolling back again returns to c
    assert assert_records_match_alias(simulated_ollama) == c
    assert Deployment.objects.count() == 5


def test_the_database_refuses_a_second_active_version(versions):
    a, b, _ = versions
    ModelVersion.objects.filter(pk=a.pk).update(status="active")
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=b.pk).update(status="active")


def test_ollama_down_changes_nothing(versions, simulated_ollama, settings):
    a, b, _ = versions
    activate(a, by="tester")
    with pytest.raises(EngineUnavailable, match="unreachable"):
        activate(b, by="tester", host=closed_port_url())
    assert live_version() == a and Deployment.objects.count() == 1
    assert assert_records_match_alias(simulated_ollama) == a
    b.refresh_from_db()
    assert b.status == "exported"


def test_rollback_with_nothing_before_and_unknown_names_are_clear_errors(versions, simulated_ollama):
    with pytest.raises(RegistryError, match="No model is live"):
        rollback(by="tester")
    activate(versions[0], by="tester")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(by="tester")
    with pytest.raises(CommandError, match="No model version 'nope'.*cc-widget-selector:run-a \\(q4_k_m, active\\)"):
        call_command("activate_model", "nope")
    assert find_version("cc-widget-selector:run-b") == versions[1] and find_version("run-c") == versions[2]
    assert Deployment.objects.count() == 1


def test_a_version_that_failed_verification_cannot_be_activated(versions, simulated_ollama):
    ModelVersion.objects.filter(pk=versions[0].pk).update(status="rejected", message="no pick")
    with pytest.raises(CommandError, match="failed export verification"):
        call_command("activate_model", "run-a")
    assert live_version() is None and ALIAS not in simulated_ollama.models


def test_activate_model_command_names_what_it_replaced(versions, simulated_ollama, capsys):
    call_command("activate_model", "cc-widget-selector:run-a")
    call_command("activate_model", "run-b", "--reason", "new data")
    out = capsys.readouterr().out
    assert "cc-widget-selector:run-b is live as cc-widget-selector:live (was cc-widget-selector:run-a)" in out
    assert Deployment.objects.first().reason == "new data"


def test_a_rollback_while_ollama_is_down_changes_nothing(versions, simulated_ollama, settings):
    a, b, _ = versions
    activate(a, by="tester")
    activate(b, by="tester")
    deployments = Deployment.objects.count()
    settings.OLLAMA_HOST = closed_port_url()
    with pytest.raises(EngineUnavailable):
        rollback(by="tester")
    with pytest.raises(CommandError, match="unreachable|Ollama"):
        call_command("rollback_model")
    assert live_version() == b and Deployment.objects.count() == deployments
    assert alias_digest(simulated_ollama) == f"sha256:{b.sha256}"
