"""Quantize an f16 GGUF with llama.cpp (through llama-cpp-python's `llama_model_quantize`)."""
from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUANTIZATIONS = {
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "f16": None,
}


K_QUANT_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


class QuantizationError(RuntimeError):
    pass


@dataclass
class QuantizeReport:
    path: Path
    quantization: str
    size_bytes: int
    tensor_types: dict[str, int] = field(default_factory=dict)
    fallback_tensors: int = 0
    importance_tensors: int = 0  # tensors quantized with an importance matrix
    note: str = ""

    def as_dict(self) -> dict:
        return {"path": str(self.path), "quantization": self.quantization, "size_bytes": self.size_bytes,
                "tensor_types": self.tensor_types, "fallback_tensors": self.fallback_tensors,
                "importance_tensors": self.importance_tensors, "note": self.note}


def check_quantization(name: str) -> str:
    key = name.lower()
    if key not in QUANTIZATIONS:
        raise QuantizationError(f"Unknown quantization {name!r}: choose one of {', '.join(QUANTIZATIONS)}.")
    return key


def tensor_types(path: Path) -> Counter:
    import gguf

    return Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors)


def _quiet_llama_cpp(call: Any, *args: Any) -> Any:
    """`call` with llama.cpp's own output (a line per tensor, a warning per K-quant fallback: about 180 lines for
    SmolLM2) held back: the report below sums it up. Its log callback covers only part of it; the fallback warnings
    are written to the process's stderr from C, so the file descriptors are redirected for the call (llama-cpp-python's
    own helper for this)."""
    import llama_cpp.llama  # noqa: F401  (installs that callback)
    from llama_cpp._utils import suppress_stdout_stderr

    llama_log = logging.getLogger("llama-cpp-python")
    level = llama_log.level
    llama_log.setLevel(logging.ERROR)
    try:
        with suppress_stdout_stderr(disable=False):
            return call(*args)
    finally:
        llama_log.setLevel(level)


def _importance_array(importance: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """`importance` as llama.cpp's NULL-terminated array of `llama_model_imatrix_data`, and the buffers it points
    into (kept alive by the caller until the quantizer has read them)."""
    import ctypes

    import llama_cpp
    import numpy as np

    entries = (llama_cpp.llama_model_imatrix_data * (len(importance) + 1))()
    buffers: list[Any] = []
    for entry, (name, values) in zip(entries, sorted(importance.items())):
        array = np.ascontiguousarray(values, dtype=np.float32)
        encoded = name.encode()
        buffers += [array, encoded]
        entry.name, entry.data, entry.size = encoded, array.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), array.size
    return ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data)), [entries, *buffers]


def quantize_gguf(f16_path: str | Path, out_path: str | Path, quantization: str, *, threads: int = 0,
                  importance: Mapping[str, Any] | None = None) -> QuantizeReport:
    """Write `out_path` as `quantization` of `f16_path`; `f16` copies. `importance`: per GGUF tensor name, the mean
    square of each input column's activation (`rl.export.importance`), which llama.cpp weighs its rounding by.
    Reports tensor types and K-quant fallbacks."""
    import llama_cpp

    quantization = check_quantization(quantization)
    f16_path, out_path = Path(f16_path), Path(out_path)
    if QUANTIZATIONS[quantization] is None:
        if f16_path != out_path:
            shutil.copyfile(f16_path, out_path)
    else:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, QUANTIZATIONS[quantization])
        params.nthread = threads
        buffers: list[Any] = []
        if importance:
            params.imatrix, buffers = _importance_array(importance)
        status = _quiet_llama_cpp(llama_cpp.llama_model_quantize, str(f16_path).encode(), str(out_path).encode(), params)
        del buffers
        if status != 0 or not out_path.is_file():
            out_path.unlink(missing_ok=True)
            raise QuantizationError(f"llama.cpp could not quantize {f16_path} to {quantization} (status {status}).")
    types = tensor_types(out_path)
    report = QuantizeReport(out_path, quantization, out_path.stat().st_size, dict(types),
                            importance_tensors=len(importance or {}) if QUANTIZATIONS[quantization] else 0)
    if quantization.endswith("_k_m"):
        # llama.cpp stores a tensor whose rows are not a multiple of 256 (e.g. SmolLM2's 576) in a legacy quant type.
        report.fallback_tensors = sum(count for name, count in types.items() if name not in K_QUANT_TYPES and name not in ("F32", "F16"))
        if report.fallback_tensors:
            report.note = (f"{report.fallback_tensors} tensors fell back from K-quants to {sorted(set(types) - K_QUANT_TYPES - {'F32', 'F16'})} "
                           "because their row size is not a multiple of 256")
    return report
