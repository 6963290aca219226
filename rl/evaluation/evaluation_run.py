"""`evaluate_model`'s work: find the model(s) and the held-out data, run the backends, write and record results."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rl.core.config import TrainingConfig
from rl.core.runs import resolve_checkpoint
from rl.data.dataset_builder import build_dataset
from rl.evaluation.backends import (DECODINGS, DEFAULT_MAX_NEW_TOKENS, LlamaCppBackend, TorchBackend, evaluation_model,
                                    evaluation_precision)
from rl.evaluation.evalset import EvalSet, EvaluationError, build_eval_set
from rl.evaluation.lower_layers import LowerLayers
from rl.evaluation.metrics import evaluate_backend
from rl.evaluation.plots import plot_comparison, plot_confusion

logger = logging.getLogger(__name__)

RESULTS_FILE = "evaluation.json"
HELD_OUT = "held_out"


def evaluation_set_name(data_path: str | None) -> str:
    """`held_out` for a run's eval split; otherwise the data file's folder name (`natural` for evalsets/natural/)."""
    return Path(data_path).resolve().parent.name if data_path else HELD_OUT


def held_out_data(tokenizer: Any, run_config: dict[str, Any] | None, data_path: str | None, ratings_path: str | None,
                  limit: int | None) -> EvalSet:
    """The run's eval split (same source, seed and fraction), or ALL of the given files."""
    from rl.data.dataset_builder import prepare_training_dataset

    if data_path or ratings_path:
        if not (data_path and ratings_path):
            raise EvaluationError("Pass both --data-file and --ratings-file, or neither.")
        prepared = prepare_training_dataset("file", data_path, ratings_path, min_samples=0, eval_fraction=0.0)
        rows = prepared.dataset["train"].to_list()
        scenario_ids = set(prepared.snapshot.scenarios)
        described = {"source": "file", "data_file": data_path, "ratings_file": ratings_path, "split": "all"}
    else:
        # The same split as training: the run's own settings (or the defaults) through the same builder.
        config = TrainingConfig(**(run_config or {}).get("config", {})).replace(min_samples=0)
        data = (run_config or {}).get("data", {"source": "db"})
        prepared = build_dataset(config, data)
        rows = prepared.dataset["eval"].to_list()
        scenario_ids = {r["scenario_id"] for r in rows}
        described = {**{k: v for k, v in data.items() if v}, "split": "eval", "seed": config.held_out_seed, "eval_fraction": config.eval_fraction}
    evalset = build_eval_set(rows, prepared.snapshot, scenario_ids, tokenizer, limit)
    evalset.description = {**described, "n_pairs": len(evalset.pairs), "n_scenarios": len(evalset.cases), "limit": limit}
    return evalset


def evaluate_model(
    *,
    checkpoint: str | None = None,
    gguf: str | None = None,
    compare_base: bool = False,
    base_model: str | None = None,
    data_path: str | None = None,
    ratings_path: str | None = None,
    limit: int | None = None,
    output: str | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    decodings: tuple[str, ...] = DECODINGS,
    record: bool = True,
) -> dict[str, Any]:
    """Evaluate the tuned model (adapter or GGUF) and, with `compare_base`, its base; returns the results dict."""
    from rl.core.allocator import keep_freed_pages
    from rl.core.base_model import load_tokenizer

    keep_freed_pages()
    if not checkpoint and not gguf and not compare_base:
        raise EvaluationError("Nothing to evaluate: pass --checkpoint, --gguf, or --compare-base.")
    if gguf and not Path(gguf).is_file():
        raise EvaluationError(f"No GGUF file at {gguf!r}.")
    adapter_dir, run_config = resolve_checkpoint(checkpoint) if checkpoint else (None, None)
    base_id = base_model or ((run_config or {}).get("config", {}).get("base_model")) or None
    beta = (run_config or {}).get("config", {}).get("beta", 0.1)
    tokenizer = load_tokenizer(base_id)
    evalset = held_out_data(tokenizer, run_config, data_path, ratings_path, limit)

    set_name = evaluation_set_name(data_path)
    results: dict[str, Any] = {"data": {**evalset.description, "set": set_name, "decodings": list(decodings),
                                        "precision": evaluation_precision()}, "models": {},
                               "created_at": datetime.now(timezone.utc).isoformat()}
    base_logps = None
    # The adapter's model shares the base's lower layers: the base's pass computes them for both.
    lower_layers = LowerLayers.below_adapter(adapter_dir) if compare_base and adapter_dir is not None and not gguf else None
    if compare_base:
        name = f"base ({base_id or 'default'})"
        results["base"], base_logps = _base_scores(name, base_id, tokenizer, evalset, max_new_tokens, decodings, lower_layers)
        results["models"]["base"] = name
    served = None
    if gguf:
        tuned_backend = LlamaCppBackend(f"gguf ({gguf})", gguf, tokenizer)
    elif adapter_dir is not None:
        served = lower_layers if lower_layers is not None and lower_layers.serving else None
        tuned_backend = TorchBackend(f"adapter ({adapter_dir})", evaluation_model(base_id, adapter_dir), tokenizer, lower_layers=served)
    else:
        tuned_backend = None
    if tuned_backend is not None:
        results["tuned"], _ = evaluate_backend(tuned_backend, evalset, ref_logps=base_logps, beta=beta, max_new_tokens=max_new_tokens,
                                               decodings=decodings)
        results["models"]["tuned"] = tuned_backend.name
        if served is not None:
            logger.info("%s: %d of its scoring batches started at layer %d from the base's pass", tuned_backend.name,
                        served.served, served.first)

    results_file = RESULTS_FILE if set_name == HELD_OUT else f"evaluation-{set_name}.json"
    if output:
        destination = Path(output)
    elif gguf:
        destination = Path(gguf).with_name(Path(gguf).stem + "-" + results_file)
    elif adapter_dir is not None and run_config:
        destination = adapter_dir.parent / results_file
    else:
        destination = None
    if destination is not None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(json.dumps(results, indent=1))
        results["written_to"] = str(destination)
        plot_comparison(results, destination.with_suffix(".png"))
        plot_confusion(results, destination.with_name(destination.stem + "-confusion.png"))
    if record:
        _record(results, gguf, run_config if adapter_dir is not None else None, set_name)
        if adapter_dir is not None and not gguf and run_config:
            _remember_for_gate(run_config, evalset, results, decodings, max_new_tokens)
    return results


def _base_scores(name: str, base_id: str | None, tokenizer: Any, evalset: EvalSet, max_new_tokens: int,
                 decodings: tuple[str, ...], lower_layers: LowerLayers | None = None) -> tuple[dict[str, Any], list]:
    """The base model's metrics and log-probs on `evalset`: from the cache when this base was scored on this very set
    with these settings before (by any run), else computed and stored there (and, with `lower_layers`, its lower
    layers' work kept for the tuned model)."""
    from rl.core.base_model import base_model_fingerprint
    from rl.evaluation.score_cache import base_scores_key, cached_base_scores, store_base_scores

    key = base_scores_key(base_model_fingerprint(base_id), evalset, max_new_tokens, decodings)
    cached = cached_base_scores(key)
    if cached is not None:
        metrics, logps = cached
        logger.info("%s: the scores of an identical earlier evaluation reused (same weights, data, decoding and "
                    "precision; %s.json in RL_BASE_SCORES_DIR)", name, key)
        return {**metrics, "model": name, "cached": True}, logps
    backend = TorchBackend(name, evaluation_model(base_id), tokenizer, lower_layers=lower_layers)
    metrics, logps = evaluate_backend(backend, evalset, max_new_tokens=max_new_tokens, decodings=decodings)
    if lower_layers is not None:
        lower_layers.serve(backend.prompt_key_values)
    store_base_scores(key, metrics, logps)
    return metrics, logps


def _record(results: dict[str, Any], gguf: str | None, run_config: dict[str, Any] | None, set_name: str) -> None:
    """A GGUF's results go on its ModelVersion; an adapter's on its TrainingRun; one key per evaluation set."""
    from rl.models import ModelVersion, TrainingRun

    stored = {k: v for k, v in results.items() if k != "written_to"}
    if gguf:
        rows = ModelVersion.objects.filter(gguf_path=str(Path(gguf).resolve()))
    elif run_config:
        rows = TrainingRun.objects.filter(name=run_config.get("run"))
    else:
        return
    for row in rows:
        row.evaluation = {**(row.evaluation or {}), set_name: stored}
        row.save(update_fields=["evaluation"])


def _remember_for_gate(run_config: dict[str, Any], evalset: EvalSet, results: dict[str, Any], decodings: tuple[str, ...],
                       max_new_tokens: int) -> None:
    """Constrained-only scores are what the deploy gate computes: keep them where it looks, keyed by the exact data."""
    from rl.evaluation.score_cache import GATE_DECODINGS, data_key, remember_scores

    if tuple(decodings) == GATE_DECODINGS:
        remember_scores(run_config.get("run", ""), data_key(evalset, max_new_tokens), results.get("tuned"), results.get("base"))
