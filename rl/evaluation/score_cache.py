"""Scores reused instead of recomputed, each keyed by the exact model, data and settings it was made on.

The deploy gate's: a run's own constrained scores and its base's live on its TrainingRun (`evaluate_model --decoding
constrained` and its gate write them), a live version's on its ModelVersion. The base model's scores on an
evaluation set, which no training changes, are kept across runs in files under RL_BASE_SCORES_DIR, keyed by
the base's weights, the set, the decodings, the precision and the libraries that computed them. A score is reused
only under an identical key.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
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


logger = logging.getLogger(__name__)


def base_scores_key(base_fingerprint: str, evalset: EvalSet, max_new_tokens: int, decodings: tuple[str, ...]) -> str:
    """The key of a base model's scores on an evaluation set (the data key's prompts, pairs and precision, plus the
    weights, the decodings and the libraries that compute and decode)."""
    import importlib.metadata

    libraries = {name: importlib.metadata.version(name) for name in ("torch", "transformers", "xgrammar")}
    content = {"base": base_fingerprint, "data": data_key(evalset, max_new_tokens), "decodings": list(decodings),
               "libraries": libraries, "with": "logps"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _base_scores_file(key: str) -> Path:
    from django.conf import settings

    return Path(settings.RL_BASE_SCORES_DIR) / f"{key}.json"


def cached_base_scores(key: str) -> tuple[dict[str, Any], list] | None:
    """The base's metrics and per-pair log-probs stored under `key`, or None (also for an unreadable file)."""
    path = _base_scores_file(key)
    try:
        stored = json.loads(path.read_text())
        return stored["metrics"], [tuple(row) for row in stored["logps"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("Ignoring the unreadable base-score cache file %s (%s); scoring the base again.", path, exc)
        return None


def store_base_scores(key: str, metrics: dict[str, Any], logps: list) -> Path:
    """Write the base's scores under `key` (whole or not at all: a temporary file renamed into place)."""
    path = _base_scores_file(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"metrics": metrics, "logps": [list(row) for row in logps]}))
    partial.replace(path)
    return path
