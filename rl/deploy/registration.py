"""Registering an exported, verified version with the serving engine (rl.deploy.engines): the step after export,
before going live."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.utils import timezone

from rl.core.base_model import file_sha256, load_tokenizer
from rl.core.runs import read_run_config
from rl.deploy.engines import EngineUnavailable, RegistrationError, ServingEngine, serving_engine
from rl.export.exporter import ExportError, ExportResult, export_to_ollama
from rl.export.modelfile import ChatFormat, chat_format, ollama_parameters

logger = logging.getLogger(__name__)


def served_file(version: Any) -> Path:
    """The file whose digest the version recorded: its GGUF, or for an adapter-only version the adapter's weights."""
    if version.gguf_path:
        return Path(version.gguf_path)
    return Path(version.adapter_path) / "adapter_model.safetensors"


def register_version(version: Any, fmt: ChatFormat | None = None, engine: ServingEngine | None = None) -> Any:
    """Register an exported, verified ModelVersion with the serving engine (default: the configured one at the version's
    recorded address); the engine being down leaves it `exported`."""
    from rl.models import ModelVersion

    if version.status == ModelVersion.Status.REJECTED:
        raise ExportError(f"{version} failed verification and cannot be registered: {version.message}")
    engine = engine or serving_engine(url=version.ollama_host or None)
    path = served_file(version)
    if not path.is_file() or file_sha256(path) != version.sha256:
        raise ExportError(f"The exported model of {version} is missing or changed since export ({path}); export again.")
    if fmt is None:
        run_config = read_run_config(version.training_run.run_dir) if version.training_run is not None else {}
        fmt = chat_format(load_tokenizer(run_config.get("config", {}).get("base_model") or None))
    try:
        outcome = engine.register(version, fmt.family, fmt.template, ollama_parameters(fmt))
    except EngineUnavailable as exc:
        version.message = f"{exc} The export is kept; retry with: manage.py export_model --register-only --checkpoint ..."
        version.save()
        logger.warning(version.message)
        return version
    except RegistrationError as exc:
        version.message = str(exc)
        version.save()
        raise ExportError(str(exc)) from exc
    if "digest" in outcome and outcome["digest"] != f"sha256:{version.sha256}":
        raise ExportError(f"{engine.kind} stored blob {outcome['digest']} but the file's digest is sha256:{version.sha256}.")
    if version.status != ModelVersion.Status.ACTIVE:  # the live version registered with another engine stays live
        version.status = ModelVersion.Status.REGISTERED
    version.registered_at = timezone.now()
    version.engine, version.ollama_host = engine.kind, engine.url
    version.message = f"Registered as {version.ollama_name} with {engine.kind} at {engine.url}."
    version.save()
    return version


def ensure_registered(version: Any, engine: ServingEngine) -> Any:
    """`version` registered with `engine`, registering it (again) when needed: llama.cpp's models file and vLLM's
    loaded adapters can lose a version (a new file, a vLLM restart), and registering with them again costs little and
    changes nothing when it is there; Ollama keeps what it registered. Raises EngineUnavailable when the engine is down."""
    from rl.models import ModelVersion

    if version.status == ModelVersion.Status.EXPORTED or version.engine != engine.kind or engine.kind != "ollama":
        version = register_version(version, engine=engine)
        if version.status not in (ModelVersion.Status.REGISTERED, ModelVersion.Status.ACTIVE) or version.engine != engine.kind:
            raise EngineUnavailable(version.message)
    return version


def export_and_register(checkpoint_path: str | Path, *, register: bool = True, **export: Any) -> ExportResult:
    """`export_to_ollama`, then (with `register`) registration of the verified export with the serving engine."""
    from rl.models import ModelVersion

    result = export_to_ollama(checkpoint_path, **export)
    if not register or result.status != ModelVersion.Status.EXPORTED:
        return result
    return ExportResult.of(register_version(ModelVersion.objects.get(pk=result.model_version_id)), result.quantize)
