"""Export a trained adapter for Ollama: merge -> GGUF (f16) -> quantize -> Modelfile -> verify, ending at a verified GGUF.

Each step is a function that can be run and tested alone; `export_to_ollama` runs them in order, keeps every
artifact in the run folder (`<run>/exports/<quantization>/`) and records a ModelVersion (`exported`, or `rejected`
when verification failed). Registering it with an engine is the deploy stage's (`rl/deploy/registration.py`).
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings

from rl.core.base_model import file_sha256
from rl.core.prompts import build_messages
from rl.core.runs import EXPORTS_DIR, resolve_checkpoint
from rl.export.gguf_convert import convert_hf_to_gguf, convert_with_llama_cpp
from rl.export.importance import DEFAULT_CALIBRATION_PROMPTS, importance_for_gguf
from rl.export.modelfile import ChatFormat, chat_format, modelfile_text
from rl.export.quantize import check_quantization, quantize_gguf

logger = logging.getLogger(__name__)


DEFAULT_MODEL_NAME = "cc-widget-selector"


class ExportError(RuntimeError):
    pass


@dataclass
class ExportResult:
    model: str
    status: str
    gguf_path: str
    modelfile_path: str
    quantization: str
    sha256: str
    size_bytes: int
    verification: dict[str, Any] = field(default_factory=dict)
    quantize: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    model_version_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def of(cls, version: Any, quantize: dict[str, Any]) -> ExportResult:
        return cls(
            model=version.ollama_name, status=version.status, gguf_path=version.gguf_path, modelfile_path=version.modelfile_path,
            quantization=version.quantization, sha256=version.sha256, size_bytes=version.size_bytes,
            verification=version.verification, quantize=quantize, message=version.message, model_version_id=version.id,
        )


ADAPTER_ONLY = "lora"  # the `quantization` of a version that is its LoRA adapter as trained (vLLM, SGLang)


def _naming(adapter_dir: Path, run_config: dict[str, Any] | None, model_name: str | None) -> tuple[str, str | None, str, str]:
    """The run's name, its base model, and the version's name and tag (default: cc-widget-selector:<run>)."""
    run_name = (run_config or {}).get("run") or adapter_dir.parent.name
    base_model = (run_config or {}).get("config", {}).get("base_model") or None
    name, _, tag = (model_name or f"{DEFAULT_MODEL_NAME}:{run_name}").partition(":")
    return run_name, base_model, name, tag or run_name


def record_adapter_version(checkpoint_path: str | Path, model_name: str | None = None, *, engine_url: str | None = None) -> ExportResult:
    """A version that is the trained LoRA adapter itself, for engines that load adapters on a shared base (vLLM):
    nothing is merged, converted or quantized, so there is nothing to verify; the adapter's weights get a digest so a
    later change is caught at registration."""
    from rl.models import ModelVersion, TrainingRun

    adapter_dir, run_config = resolve_checkpoint(str(checkpoint_path))
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{adapter_dir} has no adapter_model.safetensors; vLLM loads adapters saved as safetensors.")
    run_name, _base_model, name, tag = _naming(adapter_dir, run_config, model_name)
    training_run = TrainingRun.objects.filter(name=run_name).first()
    version, _ = ModelVersion.objects.update_or_create(
        name=name, tag=tag, quantization=ADAPTER_ONLY,
        defaults={
            "training_run": training_run, "export_dir": str(adapter_dir), "gguf_path": "", "modelfile_path": "",
            "adapter_path": str(adapter_dir), "sha256": file_sha256(weights), "size_bytes": weights.stat().st_size,
            "evaluation": (training_run.evaluation if training_run else {}) or {}, "ollama_host": engine_url or "",
            "registered_at": None, "engine": "", "verification": {"adapter": "served as trained; nothing converted"},
            "status": ModelVersion.Status.EXPORTED, "message": "The LoRA adapter as trained, for an engine that loads adapters; not registered.",
        },
    )
    return ExportResult.of(version, {})


def merge_adapter(adapter_dir: Path, base_model: str | None, out_dir: Path) -> tuple[Any, Any]:
    """Fold the LoRA adapter into the base weights and save a plain Hugging Face folder with the tokenizer."""
    from peft import PeftModel

    from rl.core.base_model import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(base_model)
    model = PeftModel.from_pretrained(load_causal_lm(base_model), str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model, tokenizer


class VerificationPrompts(NamedTuple):
    prompts: list[list[dict]]
    catalog: Any
    schemas: list[dict[str, Any]]  # each prompt's answer schema, as serving sends it to Ollama


def run_snapshot(run_config: dict[str, Any] | None) -> Any:
    """The feedback the run trained on (its data source), for the export's verification and calibration prompts."""
    from rl.data.snapshot import load_snapshot

    data = (run_config or {}).get("data") or {"source": "db"}
    snapshot = load_snapshot(data.get("source", "db"), data.get("data_path"), data.get("ratings_path"))
    if not snapshot.scenarios:
        raise ExportError("No scenarios to verify the export with: seed or import feedback first.")
    return snapshot


def verification_prompts(snapshot: Any, count: int = 3) -> VerificationPrompts:
    from rl.core.prompts import answer_schema

    scenarios = [snapshot.scenarios[k] for k in sorted(snapshot.scenarios)[:count]]
    return VerificationPrompts([build_messages(s, snapshot.catalog) for s in scenarios], snapshot.catalog,
                               [answer_schema(s, snapshot.catalog) for s in scenarios])


def calibration_prompts(snapshot: Any, count: int = DEFAULT_CALIBRATION_PROMPTS) -> list[list[dict]]:
    """The prompts of `count` of the run's scenarios, spread evenly over their ids, for the importance matrix."""
    ids = sorted(snapshot.scenarios)
    chosen = ids[:: max(1, len(ids) // count)][:count]
    return [build_messages(snapshot.scenarios[k], snapshot.catalog) for k in chosen]


def export_to_ollama(
    checkpoint_path: str | Path,
    model_name: str | None = None,
    quantization: str = "q4_k_m",
    *,
    template_file: str | None = None,
    llama_cpp_dir: str | None = None,
    ollama_host: str | None = None,
    check_pick: bool = True,
    keep_merged: bool = False,
    importance_prompts: int = 0,
) -> ExportResult:
    """`importance_prompts`: quantize with an importance matrix of the merged model over that many of the run's own
    prompts (`rl/export/importance.py`); 0, the f16 copy and the lora record take none."""
    from rl.export.verify import VerificationFailed, verify_export
    from rl.models import ModelVersion, TrainingRun

    if quantization.lower() == ADAPTER_ONLY:
        return record_adapter_version(checkpoint_path, model_name, engine_url=ollama_host)
    quantization = check_quantization(quantization)
    adapter_dir, run_config = resolve_checkpoint(str(checkpoint_path))
    run_name, base_model, name, tag = _naming(adapter_dir, run_config, model_name)
    host = ollama_host or settings.OLLAMA_HOST
    export_dir = adapter_dir.parent / EXPORTS_DIR / quantization

    from rl.core.base_model import load_tokenizer

    fmt: ChatFormat = chat_format(load_tokenizer(base_model), template_file)
    snapshot = run_snapshot(run_config)
    prompts, catalog, schemas = verification_prompts(snapshot)

    if export_dir.exists():
        shutil.rmtree(export_dir)
    merged_dir = export_dir / "merged"
    logger.info("Merging %s into its base model", adapter_dir)
    model, tokenizer = merge_adapter(adapter_dir, base_model, merged_dir)
    f16_path = export_dir / "model-f16.gguf"
    logger.info("Converting to GGUF (f16)")
    if llama_cpp_dir:
        convert_with_llama_cpp(llama_cpp_dir, merged_dir, f16_path)
    else:
        from rl.core.base_model import resolve_base_model

        resolved = resolve_base_model(base_model)
        convert_hf_to_gguf(merged_dir, f16_path, source_gguf=resolved.gguf_file, name=f"{name}:{tag}")
    gguf_path = export_dir / f"model-{quantization}.gguf"
    importance = None
    if importance_prompts > 0 and quantization != "f16":
        logger.info("Computing the importance matrix")
        importance = importance_for_gguf(model, tokenizer, calibration_prompts(snapshot, importance_prompts), f16_path)
    logger.info("Quantizing to %s", quantization)
    quantized = quantize_gguf(f16_path, gguf_path, quantization, importance=importance)
    if quantized.note:
        logger.info("Quantization: %s", quantized.note)
    modelfile_path = export_dir / "Modelfile"
    modelfile_path.write_text(modelfile_text(gguf_path.name, fmt))

    training_run = TrainingRun.objects.filter(name=run_name).first()
    version, _ = ModelVersion.objects.update_or_create(
        name=name, tag=tag, quantization=quantization,
        defaults={
            "training_run": training_run, "export_dir": str(export_dir), "gguf_path": str(gguf_path),
            "modelfile_path": str(modelfile_path), "sha256": file_sha256(gguf_path), "size_bytes": gguf_path.stat().st_size,
            "evaluation": (training_run.evaluation if training_run else {}) or {}, "ollama_host": host, "registered_at": None,
            "adapter_path": str(adapter_dir), "engine": "",
        },
    )
    try:
        report = verify_export(merged_model=model, tokenizer=tokenizer, f16_gguf=f16_path, quantized_gguf=gguf_path,
                               fmt=fmt, prompts=prompts, catalog=catalog, schemas=schemas, check_pick=check_pick)
        version.verification = report.as_dict()
    except VerificationFailed as failure:
        version.verification, version.status, version.message = failure.report, ModelVersion.Status.REJECTED, str(failure)
        version.save()
        (export_dir / "verification.json").write_text(json.dumps(failure.report, indent=1))
        return ExportResult.of(version, quantized.as_dict())
    (export_dir / "verification.json").write_text(json.dumps(version.verification, indent=1))
    if not keep_merged:
        shutil.rmtree(merged_dir)
    version.status, version.message = ModelVersion.Status.EXPORTED, "Exported and verified; not registered."
    version.save()
    return ExportResult.of(version, quantized.as_dict())

