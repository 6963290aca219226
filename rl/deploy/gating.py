"""Judging one trained run against the live model: score both on the gate sets, decide, record the decision.

Used by the online learner's gate stage and by `manage.py gate_model` (a run trained by hand, e.g. the demo's);
what passes goes live through `rl.deploy.promote`.
Scores are reused where the same model was scored on identical data and settings: the live version's on its
ModelVersion, a run's own and its base's on its TrainingRun (its gate and `evaluate_model --decoding constrained` write
them there), so a gate after an evaluation costs nothing more, and a live model is not scored again on data its own
gate scored it on (the natural set, from one retrain to the next).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rl.core.config import OnlineLearningConfig
from rl.core.runs import is_adapter_folder, read_run_config
from rl.deploy.gates import GateDecision, GateThresholds, PairedRule, gate_decision, gate_decision_paired, item_outcomes
from rl.evaluation.score_cache import RUN_CACHE, VERSION_CACHE

logger = logging.getLogger(__name__)


SUMMARY_KEYS = ("n_scenarios", "n_pairs", "constrained_widget_accuracy", "constrained_fixture_accuracy", "preference_accuracy",
                "constrained_valid_pick_rate", "constrained_collapse_warnings")


def _summaries(scores: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: {k: metrics.get(k) for k in SUMMARY_KEYS} for name, metrics in scores.items()}


def score_candidate_and_live(training_run: Any, cfg: OnlineLearningConfig) -> tuple[dict, dict, str]:
    """Metrics per gate set for the run's adapter and for the live model (its base when nothing is live)."""
    from rl.core.base_model import load_tokenizer
    from rl.deploy.registry import live_version
    from rl.evaluation.gate_scoring import GateModel, gate_evalsets, score_on_gate_sets

    run_config = read_run_config(training_run.run_dir)
    data: dict[str | None, tuple[Any, dict]] = {}

    def score(model: GateModel, cache: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        # The gate sets are built once per tokenizer: candidate and live model share them unless their bases differ.
        if model.base_model not in data:
            tokenizer = load_tokenizer(model.base_model)
            data[model.base_model] = tokenizer, gate_evalsets(tokenizer, run_config, cfg.gate_set_names, cfg.gate_eval_limit)
        tokenizer, evalsets = data[model.base_model]
        return score_on_gate_sets(model, tokenizer, evalsets, max_new_tokens=cfg.max_new_tokens, cache=cache)

    run_cache = (training_run.evaluation or {}).get(RUN_CACHE, {})
    base_model = run_config["config"].get("base_model") or None
    candidate_cache = dict(run_cache.get("candidate", {}))
    candidate = score(GateModel(f"candidate {training_run.name}", base_model, Path(training_run.adapter_dir)), candidate_cache)
    # Kept so that, once this candidate is live, the next gate reuses these scores on identical data.
    training_run.evaluation = {**(training_run.evaluation or {}), RUN_CACHE: {**run_cache, "candidate": candidate_cache}}
    training_run.save(update_fields=["evaluation"])
    live = live_version()
    if live is None:
        base_cache = dict(run_cache.get("base", {}))
        base = score(GateModel(f"base ({base_model or 'default'})", base_model), base_cache)
        # Kept too: the next gate of this run on the same data, and bench/gate_calibration.py, read them there.
        training_run.evaluation = {**training_run.evaluation, RUN_CACHE: {**training_run.evaluation[RUN_CACHE], "base": base_cache}}
        training_run.save(update_fields=["evaluation"])
        return candidate, base, f"the base model ({base_model or 'default'}; nothing is live)"
    if live.training_run is None or not is_adapter_folder(live.training_run.adapter_dir):
        raise RuntimeError(f"cannot re-score the live model {live.ollama_name}: its adapter is gone "
                           f"({live.training_run.adapter_dir if live.training_run else 'no training run'}); the gate needs it.")
    scored_as_candidate = (live.training_run.evaluation or {}).get(RUN_CACHE, {}).get("candidate", {})
    cache = {**scored_as_candidate, **(live.evaluation or {}).get(VERSION_CACHE, {})}
    scores = score(GateModel(f"live {live.ollama_name}", live.training_run.config.get("base_model") or None,
                             Path(live.training_run.adapter_dir)), cache)
    live.evaluation = {**(live.evaluation or {}), VERSION_CACHE: cache}
    live.save(update_fields=["evaluation"])
    return candidate, scores, f"live {live.ollama_name}"


def decide(candidate_scores: dict[str, dict[str, Any]], live_scores: dict[str, dict[str, Any]], cfg: OnlineLearningConfig) -> GateDecision:
    """The configured rule on the two models' scores per gate set."""
    if cfg.gate_rule == "margins":
        return gate_decision(candidate_scores, live_scores, GateThresholds.from_config(cfg))
    return gate_decision_paired({name: item_outcomes(m) for name, m in candidate_scores.items()},
                                {name: item_outcomes(m) for name, m in live_scores.items()}, PairedRule.from_config(cfg))


def gate_training_run(training_run: Any, cfg: OnlineLearningConfig) -> tuple[GateDecision, dict[str, Any]]:
    """The gate's decision on a trained run and the record of it (reasons, numbers, the live model's served up-rate);
    the candidate's scores are kept on its TrainingRun."""
    from rl.deploy.registry import live_version
    from rl.evaluation.ab_results import up_rate

    candidate_scores, live_scores, live_label = score_candidate_and_live(training_run, cfg)
    decision = decide(candidate_scores, live_scores, cfg)
    gate = {**decision.as_dict(), "live_model": live_label, "candidate": _summaries(candidate_scores), "live": _summaries(live_scores)}
    live = live_version()
    if live is not None:  # how the live model does on its own traffic, for whoever reads the decision
        gate["live_served_up_rate"] = up_rate(live.ollama_name).as_dict()
    training_run.evaluation = {**(training_run.evaluation or {}), **{f"gate:{k}": v for k, v in candidate_scores.items()}}
    training_run.save(update_fields=["evaluation"])
    logger.info("Gate for %s against %s: %s: %s", training_run.name, live_label, "passed" if decision.passed else "rejected",
                "; ".join(decision.reasons))
    return decision, gate

