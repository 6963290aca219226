"""Scoring a model on the deploy gate's evaluation sets: the candidate's held-out split and the natural-question set.

Candidate and live model are scored on exactly the same scenarios and pairs with the same constrained decoding.
A live version's scores are cached on its ModelVersion under a key of the data and settings, and reused only when
both are identical.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl.data.evalsets import NATURAL_DATA_FILE, NATURAL_RATINGS_FILE
from rl.evaluation.backends import TorchBackend, evaluation_model
from rl.evaluation.evalset import EvalSet
from rl.evaluation.evaluation_run import HELD_OUT, held_out_data
from rl.evaluation.metrics import evaluate_backend
from rl.evaluation.score_cache import GATE_DECODINGS, data_key

logger = logging.getLogger(__name__)


NATURAL = "natural"


@dataclass(frozen=True)
class GateModel:
    """A model the gate scores: a base model, with or without a trained adapter."""

    label: str
    base_model: str | None
    adapter_dir: Path | None = None


def gate_evalsets(tokenizer: Any, run_config: dict[str, Any], set_names: list[str], limit: int) -> dict[str, EvalSet]:
    """The candidate run's held-out split (at most `limit` pairs and scenarios; 0: all) and/or the whole
    natural-question set, tokenized for `tokenizer`."""
    evalsets = {}
    for name in set_names:
        if name == HELD_OUT:
            evalsets[name] = held_out_data(tokenizer, run_config, None, None, limit or None)
        elif name == NATURAL:
            evalsets[name] = held_out_data(tokenizer, None, str(NATURAL_DATA_FILE), str(NATURAL_RATINGS_FILE), None)
        else:
            raise ValueError(f"Unknown gate set {name!r}.")
    return evalsets


def score_on_gate_sets(model: GateModel, tokenizer: Any, evalsets: dict[str, EvalSet], *, max_new_tokens: int,
                       cache: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Metrics per gate set, for evalsets tokenized with `tokenizer` (`model`'s). `cache` (a version's stored scores by
    data key) is read and extended: a set whose key is in it is not scored again."""
    scores: dict[str, dict[str, Any]] = {}
    loaded = None
    for name, evalset in evalsets.items():
        key = data_key(evalset, max_new_tokens)
        if cache is not None and key in cache:
            logger.info("Gate: %s on %s: reusing its score on identical data and settings", model.label, name)
            scores[name] = cache[key]
            continue
        if loaded is None:
            loaded = evaluation_model(model.base_model, model.adapter_dir)
        logger.info("Gate: scoring %s on %s (%d scenarios, %d pairs, constrained decoding)", model.label, name,
                    len(evalset.cases), len(evalset.pairs))
        metrics, _ = evaluate_backend(TorchBackend(model.label, loaded, tokenizer), evalset, max_new_tokens=max_new_tokens,
                                      decodings=GATE_DECODINGS)
        metrics["data"] = evalset.description
        scores[name] = metrics
        if cache is not None:
            cache[key] = metrics
    return scores
