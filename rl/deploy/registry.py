"""Which model version is live, and the serving engine's alias that points at it.

Activation and rollback change the engine first (register the version if needed, then point the alias at it) and
the records second, in one transaction: if the engine is down nothing changes anywhere. The database allows at most one
`active` version (a conditional unique constraint), so two activations racing cannot both win.
"""
from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction

from rl.deploy.engines import serving_engine

logger = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """A version cannot be activated (unknown, rejected, nothing to roll back to); nothing changed."""


def live_alias() -> str:
    from rl.core.config import online_learning_config

    return online_learning_config().live_alias


def live_version() -> Any:
    from rl.models import ModelVersion

    return ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).select_related("training_run").first()


def find_version(name: str, quantization: str | None = None) -> Any:
    """A version by `name:tag` (as the engine knows it), by tag alone, or by id; a clear error naming the choices."""
    from rl.models import ModelVersion

    versions = ModelVersion.objects.all()
    if quantization:
        versions = versions.filter(quantization=quantization)
    model, _, tag = name.partition(":")
    if name.isdigit():
        matches = list(versions.filter(pk=int(name)))
    elif tag:
        matches = list(versions.filter(name=model, tag=tag))
    else:
        matches = list(versions.filter(tag=name)) or list(versions.filter(name=name))
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{v.ollama_name} ({v.quantization}, {v.status})" for v in versions[:20]) or "none yet: export one first"
    if not matches:
        raise RegistryError(f"No model version {name!r}{f' in {quantization}' if quantization else ''}. Known: {known}.")
    raise RegistryError(f"{name!r} names {len(matches)} versions; add --quantization. Known: {known}.")


def activate(version: Any, *, by: str, reason: str = "", host: str | None = None, alias: str | None = None,
             action: str = "activate") -> Any:
    """Make `version` the live model: register it with the serving engine (at `host`, or its configured address) if it
    is not yet, point the alias at it, record it.

    Raises EngineUnavailable (nothing changed; retry later), RegistryError or RegistrationError."""
    from rl.deploy.registration import ensure_registered
    from rl.models import Deployment, ModelVersion

    engine = serving_engine(url=host)
    alias = alias or live_alias()
    if version.status == ModelVersion.Status.REJECTED:
        raise RegistryError(f"{version.ollama_name} failed export verification and cannot be live: {version.message}")
    version = ensure_registered(version, engine)
    engine.point_alias(version, alias)
    try:
        with transaction.atomic():
            already_live = version.status == ModelVersion.Status.ACTIVE
            previous = version.become_active()
            if previous is None and already_live:  # live already (now on another engine): the version before stays the one to roll back to
                last = Deployment.objects.filter(version=version).first()
                previous = last.previous if last is not None else None
            deployment = Deployment.objects.create(version=version, previous=previous, action=action, alias=alias,
                                                   ollama_host=engine.url, by=by, reason=reason)
    except IntegrityError as exc:
        winner = live_version()
        if winner is not None:
            engine.point_alias(winner, alias)
        raise RegistryError(f"Another activation made {winner} live at the same moment; {alias} points at it again.") from exc
    logger.info("%s: %s is live as %s (was %s)", action, version.ollama_name, alias, previous.ollama_name if previous else "nothing")
    return deployment


def rollback(*, by: str, reason: str = "", host: str | None = None, alias: str | None = None) -> Any:
    """Make the version that was live before the current one live again."""
    from rl.models import Deployment

    current = live_version()
    if current is None:
        raise RegistryError("No model is live, so there is nothing to roll back.")
    last = Deployment.objects.filter(version=current).select_related("previous").first()
    if last is None or last.previous is None:
        raise RegistryError(f"{current.ollama_name} replaced no earlier version, so there is nothing to roll back to.")
    return activate(last.previous, by=by, reason=reason or f"rollback from {current.ollama_name}", host=host, alias=alias,
                    action="rollback")


def retire(version: Any, *, host: str | None = None) -> Any:
    """Stop serving a version that is not live: the engine drops it (vLLM unloads its adapter, llama.cpp's models file
    loses its entry, Ollama deletes the model) and its record says `retired`. Its export stays; activating it later
    registers it again. Raises RegistryError for the live version, EngineUnavailable when the engine is down (nothing changed)."""
    from rl.models import ModelVersion

    if version.status == ModelVersion.Status.ACTIVE:
        raise RegistryError(f"{version.ollama_name} is live: activate or roll back to another version before retiring it.")
    if version.status == ModelVersion.Status.REGISTERED:
        serving_engine(kind=version.engine or None, url=host or version.ollama_host or None).retire(version)
    version.status, version.pending_deploy = ModelVersion.Status.RETIRED, False
    version.message = "Retired: no longer served."
    version.save(update_fields=["status", "pending_deploy", "message"])
    logger.info("retire: %s is no longer served", version.ollama_name)
    return version
