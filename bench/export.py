"""Export timings on a trained run: merge, convert (built-in, and llama.cpp's converter on the same model), the
importance matrix, quantize (each quantization without and with that matrix).

Prints seconds per step, file sizes, K-quant fallbacks, and llama.cpp-vs-PyTorch next-token agreement.

    .venv/bin/python bench/export.py --checkpoint <run> [--llama-cpp-dir .cache/llama.cpp]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a run name, run folder or adapter folder")
    parser.add_argument("--llama-cpp-dir", default=str(ROOT / ".cache" / "llama.cpp"))
    parser.add_argument("--quantizations", default="q4_k_m,q8_0")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
    import django

    django.setup()
    from rl.core.base_model import resolve_base_model
    from rl.core.runs import resolve_checkpoint
    from rl.evaluation.evalset import tokenize_prompt
    from rl.export.exporter import calibration_prompts, merge_adapter, run_snapshot, verification_prompts
    from rl.export.importance import importance_for_gguf
    from rl.export.gguf_convert import convert_hf_to_gguf, convert_with_llama_cpp
    from rl.export.quantize import quantize_gguf
    from rl.export.verify import argmax_agreement

    adapter_dir, run_config = resolve_checkpoint(args.checkpoint)
    base = (run_config or {}).get("config", {}).get("base_model") or None
    work = Path(tempfile.mkdtemp(prefix="ccrl-export-bench-"))
    rows = []

    began = time.perf_counter()
    model, tokenizer = merge_adapter(adapter_dir, base, work / "merged")
    rows.append(("merge (PeftModel.merge_and_unload + save)", time.perf_counter() - began, ""))

    began = time.perf_counter()
    f16 = convert_hf_to_gguf(work / "merged", work / "model-f16.gguf", source_gguf=resolve_base_model(base).gguf_file)
    rows.append(("convert, built-in (gguf package)", time.perf_counter() - began, f"{f16.stat().st_size / 1e6:.1f} MB"))
    if (Path(args.llama_cpp_dir) / "convert_hf_to_gguf.py").is_file():
        began = time.perf_counter()
        theirs = convert_with_llama_cpp(args.llama_cpp_dir, work / "merged", work / "llama-cpp-f16.gguf")
        rows.append(("convert, llama.cpp's convert_hf_to_gguf.py", time.perf_counter() - began, f"{theirs.stat().st_size / 1e6:.1f} MB"))

    snapshot = run_snapshot(run_config)
    began = time.perf_counter()
    importance = importance_for_gguf(model, tokenizer, calibration_prompts(snapshot), f16)
    rows.append(("importance matrix (PyTorch, the run's prompts)", time.perf_counter() - began, f"{len(importance)} tensors"))
    quantized = []
    for quantization in args.quantizations.split(","):
        for weighted in (False, True):
            name = f"model-{quantization}{'-imatrix' if weighted else ''}.gguf"
            began = time.perf_counter()
            report = quantize_gguf(f16, work / name, quantization, importance=importance if weighted else None)
            rows.append((f"quantize {quantization}{' with the importance matrix' if weighted else ''}", time.perf_counter() - began,
                         f"{report.size_bytes / 1e6:.1f} MB; {report.note or 'no fallbacks'}"))
            quantized.append(name)

    prompts = verification_prompts(snapshot, count=5).prompts
    sequences = [tokenize_prompt(tokenizer, p) for p in prompts]
    for name in ["model-f16.gguf", *quantized]:
        agreement, positions = argmax_agreement(model, work / name, sequences)
        rows.append((f"next-token agreement with PyTorch, {name}", 0.0, f"{agreement:.1%} of {positions} positions"))

    print(f"\nexport bench on {adapter_dir} (work folder {work})")
    for label, seconds, detail in rows:
        print(f"{label:<52}{seconds:>8.1f} s  {detail}" if seconds else f"{label:<52}{'':>10}  {detail}")


if __name__ == "__main__":
    main()
