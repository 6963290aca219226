"""Registering an exported, verified version with the serving engine (Ollama): the step after export, before going live."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from rl.core.base_model import file_sha256, load_tokenizer
from rl.core.prompts import SYSTEM_PROMPT
from rl.core.runs import read_run_config
from rl.deploy.ollama_registry import OllamaUnavailable, RegistrationError, register_gguf
from rl.export.exporter import ExportError, ExportResult, export_to_ollama
from rl.export.modelfile import ChatFormat, chat_format, ollama_parameters

logger = logging.getLogger(__name__)


def register_version(version: Any, fmt: ChatFormat | None = None) -> Any:
    """Register an exported, verified ModelVersion with Ollama; Ollama being down leaves it `exported`."""
    from rl.models import ModelVersion

    if version.status == ModelVersion.Status.REJECTED:
        raise ExportError(f"{version} failed verification and cannot be registered: {version.message}")
    gguf_path = Path(version.gguf_path)
    if not gguf_path.is_file() or file_sha256(gguf_path) != version.sha256:
        raise ExportError(f"The GGUF of {version} is missing or changed since export ({gguf_path}); export again.")
    if fmt is None:
        run_config = read_run_config(version.training_run.run_dir) if version.training_run is not None else {}
        fmt = chat_format(load_tokenizer(run_config.get("config", {}).get("base_model") or None))
    try:
        outcome = register_gguf(host=version.ollama_host or settings.OLLAMA_HOST, model=version.ollama_name, gguf_path=gguf_path,
                                template=fmt.template, system=SYSTEM_PROMPT, parameters=ollama_parameters(fmt))
    except OllamaUnavailable as exc:
        version.message = f"{exc} The export is kept; retry with: manage.py export_model --register-only --checkpoint ..."
        version.save()
        logger.warning(version.message)
        return version
    except RegistrationError as exc:
        version.message = str(exc)
        version.save()
        raise ExportError(str(exc)) from exc
    if outcome["digest"] != f"sha256:{version.sha256}":
        raise ExportError(f"Ollama stored blob {outcome['digest']} but the file's digest is sha256:{version.sha256}.")
    version.status, version.registered_at = ModelVersion.Status.REGISTERED, timezone.now()
    version.message = f"Registered as {version.ollama_name} at {version.ollama_host}."
    version.save()
    return version


def export_and_register(checkpoint_path: str | Path, *, register: bool = True, **export: Any) -> ExportResult:
    """`export_to_ollama`, then (with `register`) registration of the verified export with Ollama."""
    from rl.models import ModelVersion

    result = export_to_ollama(checkpoint_path, **export)
    if not register or result.status != ModelVersion.Status.EXPORTED:
        return result
    return ExportResult.of(register_version(ModelVersion.objects.get(pk=result.model_version_id)), result.quantize)
