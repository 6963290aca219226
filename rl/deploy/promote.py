"""The one path from a gated candidate to the live model: export it (or reuse its verified export), record its gate, and
make it live, or leave it pending while the engine is down. Used by `gate_model --deploy`, the online learner (its
deploy stage and its pending deploys) and the closed-loop bench."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rl.core.config import OnlineLearningConfig
from rl.deploy.engines import EngineUnavailable
from rl.deploy.registry import activate, live_version
from rl.export.exporter import export_to_ollama

logger = logging.getLogger(__name__)


class Outcome:
    REJECTED = "rejected"  # by its gate, or by export verification: nothing changed
    EXPORTED = "exported"  # passed and exported; not deployed (deploy=False)
    PENDING = "deploy_pending"  # passed and exported; the engine was down, a later online_learn tick deploys it
    DEPLOYED = "deployed"
    AB_STARTED = "ab_started"  # passed and exported; answers a share of requests beside the live model (deploy_mode ab)


@dataclass
class Promotion:
    outcome: str
    message: str
    version: Any = None
    deployment: Any = None


def gate_allows(gate: Mapping[str, Any]) -> bool:
    """A candidate may go live when it passed its gate, or when a person forced it through (recorded as `forced_by`)."""
    return bool(gate.get("passed") or gate.get("forced_by"))


def record_gate(training_run: Any, gate: Mapping[str, Any]) -> None:
    """The gate's decision on every version already exported from `training_run`."""
    from rl.models import ModelVersion

    ModelVersion.objects.filter(training_run=training_run).update(gate=dict(gate))


def exported_version(training_run: Any, cfg: OnlineLearningConfig, quantization: str | None = None) -> Any:
    """The run's export in `quantization` (not one rejected by verification), exporting it when there is none yet."""
    from rl.models import ModelVersion

    quantization = quantization or cfg.quantization
    version = (ModelVersion.objects.filter(training_run=training_run, quantization=quantization)
               .exclude(status=ModelVersion.Status.REJECTED).first())
    if version is None:
        exported = export_to_ollama(training_run.adapter_dir, model_name=f"{cfg.model_name}:{training_run.name}",
                                    quantization=quantization, check_pick=cfg.verify_pick)
        version = ModelVersion.objects.get(pk=exported.model_version_id)
    return version


def promote(candidate: Any, gate: Mapping[str, Any], cfg: OnlineLearningConfig, *, by: str, deploy: bool = True,
            quantization: str | None = None, reason: str = "") -> Promotion:
    """Take `candidate` (a TrainingRun, or a ModelVersion already exported) as far towards live as its gate and
    `deploy` allow. The gate record is stored on the version; the deployment's reason is `reason`, else the gate's.
    Raises RegistryError / RegistrationError from the activation (the live model unchanged); the engine being down is
    an outcome (PENDING), not an error."""
    from rl.models import ModelVersion, TrainingRun

    label = candidate.name if isinstance(candidate, TrainingRun) else candidate.ollama_name
    if isinstance(candidate, TrainingRun):
        record_gate(candidate, gate)
    if not gate_allows(gate):
        return Promotion(Outcome.REJECTED, f"{label} rejected by its gate")
    version = exported_version(candidate, cfg, quantization) if isinstance(candidate, TrainingRun) else candidate
    version.gate = dict(gate)
    version.save(update_fields=["gate"])
    if version.status == ModelVersion.Status.REJECTED:
        return Promotion(Outcome.REJECTED, f"{version.ollama_name} failed export verification: {version.message}", version)
    if not deploy:
        return Promotion(Outcome.EXPORTED, f"{version.ollama_name} exported and verified; not deployed "
                                           f"(deploy with: manage.py activate_model {version.ollama_name})", version)
    forced = f" (forced by {gate['forced_by']})" if gate.get("forced_by") and not gate.get("passed") else ""
    if cfg.deploy_mode == "ab" and live_version() is not None and not forced:
        from rl.deploy.ab import start_ab

        try:
            deployment = start_ab(version, cfg, by=by, reason=reason or "; ".join(gate.get("reasons", [])))
        except EngineUnavailable as exc:
            version.mark_pending(f"Passed its gate; not deployed yet: {exc}")
            return Promotion(Outcome.PENDING, f"{version.ollama_name} passed its gate but the serving engine is down; a later "
                                              "online_learn tick starts its A/B", version)
        return Promotion(Outcome.AB_STARTED, f"{version.ollama_name} answers {cfg.ab_share:.0%} of requests as an A/B arm; "
                                             "online_learn promotes or retires it on its served up-rate", version, deployment)
    try:
        deployment = activate(version, by=by + forced, reason=reason or "; ".join(gate.get("reasons", [])), alias=cfg.live_alias)
    except EngineUnavailable as exc:
        version.mark_pending(f"Passed its gate; not deployed yet: {exc}")
        logger.warning("deploy: %s pending: %s", version.ollama_name, exc)
        return Promotion(Outcome.PENDING, f"{version.ollama_name} passed its gate but the serving engine is down; the previous model stays "
                                          "live and a later online_learn tick deploys it", version)
    return Promotion(Outcome.DEPLOYED, f"{version.ollama_name} is live as {deployment.alias}", version, deployment)


def promote_pending(cfg: OnlineLearningConfig, *, by: str) -> Promotion | None:
    """Deploy the newest version left pending while the engine was down (older pending ones are dropped); None when
    nothing is pending."""
    from rl.models import ModelVersion

    pending = list(ModelVersion.objects.filter(pending_deploy=True).order_by("-created_at"))
    if not pending:
        return None
    newest = pending[0]
    for version in pending[1:]:
        version.drop_pending(f"Not deployed: {newest.ollama_name} passed its gate later.")
    logger.info("deploy: retrying the pending deployment of %s", newest.ollama_name)
    return promote(newest, newest.gate, cfg, by=by, reason="pending deployment: passed its gate while the serving engine was down")
