"""The scores the deploy gate reuses: constrained metrics keyed by the exact data and settings they were made on.

A run's own scores and its base's live on its TrainingRun (`evaluate_model --decoding constrained` and its gate write
them), a live version's on its ModelVersion; a score is reused only under an identical key.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from rl.evaluation.backends import evaluation_precision
from rl.evaluation.evalset import EvalSet

GATE_DECODINGS = ("constrained",)


def data_key(evalset: EvalSet, max_new_tokens: int) -> str:
    """Identifies the data and settings a score was made on: the same key means the same prompts, pairs and decoding."""
    content = {
        "pairs": [(p.prompt_ids, p.chosen_ids, p.rejected_ids) for p in evalset.pairs],
        "cases": [(c.scenario_id, c.prompt_ids, [(e.widget, e.fixtures) for e in c.expected], c.schema) for c in evalset.cases],
        "decodings": GATE_DECODINGS, "max_new_tokens": max_new_tokens, "precision": evaluation_precision(),
        "with": "item_outcomes",  # scores made before per-item outcomes were kept do not serve the paired gate
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=list).encode()).hexdigest()


RUN_CACHE = "gate_cache"  # TrainingRun.evaluation[RUN_CACHE] = {"candidate": {data key: metrics}, "base": {...}}
VERSION_CACHE = "gate_scores"  # ModelVersion.evaluation[VERSION_CACHE] = {data key: metrics}


def remember_scores(training_run_name: str, data_key: str, candidate: dict[str, Any] | None, base: dict[str, Any] | None) -> None:
    """Keep an evaluation's constrained scores of a run's adapter and of its base where the gate looks for them."""
    from rl.models import TrainingRun

    for run in TrainingRun.objects.filter(name=training_run_name):
        cache = dict((run.evaluation or {}).get(RUN_CACHE, {}))
        for role, metrics in (("candidate", candidate), ("base", base)):
            if metrics is not None:
                cache[role] = {**cache.get(role, {}), data_key: metrics}
        run.evaluation = {**(run.evaluation or {}), RUN_CACHE: cache}
        run.save(update_fields=["evaluation"])
