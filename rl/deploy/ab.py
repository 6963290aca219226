"""A/B promotion on evidence (online learning's deploy_mode `ab`): a candidate that passed its gate first answers a
share of requests beside the live model; later ticks compare the two arms' usable up-rates on the picks each served
since the A/B began, and promote the candidate when it is better, or retire it when it is worse or when enough
ratings passed without evidence either way. Every start and decision is a Deployment row with its numbers."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rl.core.config import OnlineLearningConfig
from rl.deploy.engines import EngineUnavailable, serving_engine
from rl.deploy.registry import activate, live_version, retire

logger = logging.getLogger(__name__)

PROMOTE, RETIRE, WAIT = "promote", "retire", "wait"


def candidate_arm() -> Any:
    """The model version serving as the A/B candidate arm, or None."""
    from rl.models import ModelVersion

    return ModelVersion.objects.filter(ab_share__gt=0, status=ModelVersion.Status.REGISTERED).order_by("-created_at").first()


def start_ab(version: Any, cfg: OnlineLearningConfig, *, by: str, reason: str = "") -> Any:
    """Make `version` the A/B candidate arm at `cfg.ab_share` (registering it with the serving engine first); any
    earlier arm stops. Raises EngineUnavailable (nothing changed) when the engine is down."""
    from rl.deploy.registration import ensure_registered
    from rl.models import Deployment, ModelVersion

    engine = serving_engine()
    version = ensure_registered(version, engine)
    ModelVersion.objects.filter(ab_share__gt=0).exclude(pk=version.pk).update(ab_share=0.0)
    version.ab_share = cfg.ab_share
    version.save(update_fields=["ab_share"])
    deployment = Deployment.objects.create(version=version, previous=live_version(), action=Deployment.Action.AB_START, alias="",
                                           ollama_host=engine.url, by=by, reason=reason or f"A/B arm at {cfg.ab_share:.0%} of requests")
    logger.info("A/B: %s answers %.0f%% of requests beside the live model", version.ollama_name, 100 * cfg.ab_share)
    return deployment


@dataclass(frozen=True)
class ABEvidence:
    candidate: str
    live: str
    candidate_ups: int
    candidate_ratings: int
    live_ups: int
    live_ratings: int
    p_better: float
    p_worse: float
    decision: str

    def words(self) -> str:
        return (f"A/B: {self.candidate} {self.candidate_ups}/{self.candidate_ratings} up against live {self.live} "
                f"{self.live_ups}/{self.live_ratings} since the A/B began; one-sided Fisher exact p(better) = {self.p_better:.3g}, "
                f"p(worse) = {self.p_worse:.3g}: {self.decision}")


def ab_evidence(candidate: Any, live: Any, cfg: OnlineLearningConfig) -> ABEvidence:
    """The two arms' usable up-rates on the picks each served since the candidate's A/B began, and what they decide."""
    from scipy.stats import fisher_exact

    from rl.evaluation.ab_results import up_rates
    from rl.models import Deployment

    start = Deployment.objects.filter(version=candidate, action=Deployment.Action.AB_START).first()
    rates = up_rates([candidate.ollama_name, live.ollama_name], since=start.created_at if start else None)
    c, l = rates[candidate.ollama_name], rates[live.ollama_name]
    table = [[c.ups, c.n - c.ups], [l.ups, l.n - l.ups]]
    p_better = float(fisher_exact(table, alternative="greater").pvalue) if c.n and l.n else 1.0
    p_worse = float(fisher_exact(table, alternative="less").pvalue) if c.n and l.n else 1.0
    if c.n < cfg.ab_min_ratings:
        decision = WAIT
    elif p_better < cfg.ab_alpha:
        decision = PROMOTE
    elif p_worse < cfg.ab_alpha or c.n >= cfg.ab_max_ratings:
        decision = RETIRE
    else:
        decision = WAIT
    return ABEvidence(candidate.ollama_name, live.ollama_name, c.ups, c.n, l.ups, l.n, p_better, p_worse, decision)


def decide_ab(cfg: OnlineLearningConfig, *, by: str) -> ABEvidence | None:
    """Promote, retire or keep waiting on the A/B candidate arm; None when there is none (or nothing live to compare)."""
    from rl.models import Deployment

    candidate, live = candidate_arm(), live_version()
    if candidate is None or live is None:
        return None
    evidence = ab_evidence(candidate, live, cfg)
    logger.info(evidence.words())
    if evidence.decision == PROMOTE:
        activate(candidate, by=by, reason=evidence.words(), alias=cfg.live_alias, action=Deployment.Action.AB_PROMOTE)
        candidate.ab_share = 0.0
        candidate.save(update_fields=["ab_share"])
    elif evidence.decision == RETIRE:
        candidate.ab_share = 0.0
        candidate.save(update_fields=["ab_share"])
        Deployment.objects.create(version=candidate, previous=live, action=Deployment.Action.AB_RETIRE, alias="",
                                  ollama_host=candidate.ollama_host, by=by, reason=evidence.words())
        try:
            retire(candidate)
        except EngineUnavailable as exc:  # it serves no traffic any more; the engine drops it when it is back
            logger.warning("A/B: %s retired, but the engine could not drop it now: %s", candidate.ollama_name, exc)
    return evidence
