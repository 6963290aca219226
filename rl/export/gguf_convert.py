"""A Hugging Face causal LM folder -> a GGUF file (f16), for the Llama family (Llama 2/3, SmolLM2, Mistral) and Qwen2.

Built on the `gguf` package (GGUFWriter, tensor name maps, SpecialVocab). It writes the tensors exactly as
llama.cpp's convert_hf_to_gguf.py does (names, shapes, types, the rotary permutation of q/k for Llama, llama3 rope
factors); tests/test_gguf_convert.py compares the two on the same model. Other architectures go through a llama.cpp
checkout's own converter (`convert_with_llama_cpp`).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# architecture in config.json -> (gguf architecture, undo HF's rotary permutation of q/k)
SUPPORTED = {
    "LlamaForCausalLM": ("llama", True),
    "MistralForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}


class ConversionError(RuntimeError):
    pass


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _tokenizer_pre(config: dict[str, Any], vocab_size: int, source_gguf: Path | None) -> str:
    """llama.cpp's pre-tokenizer name: copied from the GGUF the model came from, else known by family."""
    if source_gguf is not None and source_gguf.is_file():
        import gguf

        field = gguf.GGUFReader(str(source_gguf)).get_field("tokenizer.ggml.pre")
        if field is not None:
            return bytes(field.parts[field.data[0]]).decode()
    if config.get("model_type") == "qwen2":
        return "qwen2"
    if vocab_size in (128256, 128000):
        return "llama-bpe"
    if vocab_size == 49152:
        return "smollm"
    raise ConversionError(
        "Unknown tokenizer family: cannot name llama.cpp's pre-tokenizer for this model. "
        "Convert with a llama.cpp checkout instead (--llama-cpp-dir)."
    )


def _vocab(folder: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types by id, as llama.cpp's get_vocab_base lists them."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    reverse = {i: token for token, i in tokenizer.vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            if not decoder[i].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            looks_special = (token.startswith("<|") and token.endswith("|>")) or (token.startswith("<") and token.endswith(">") and " " not in token)
            if decoder[i].special or looks_special:
                types.append(gguf.TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _rope_factors(config: dict[str, Any], head_dim: int) -> np.ndarray | None:
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def convert_hf_to_gguf(folder: str | Path, out_path: str | Path, *, source_gguf: str | Path | None = None, name: str = "") -> Path:
    """Write `folder` (config.json, safetensors, tokenizer) as an f16 GGUF at `out_path`."""
    import gguf
    import torch
    from safetensors import safe_open

    folder, out_path = Path(folder), Path(out_path)
    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in SUPPORTED:
        raise ConversionError(
            f"Architecture {architecture} is not supported by the built-in converter ({', '.join(SUPPORTED)}): "
            "pass --llama-cpp-dir DIR to use a llama.cpp checkout's convert_hf_to_gguf.py."
        )
    arch, undo_permute = SUPPORTED[architecture]
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads", n_head)
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    vocab_size = config["vocab_size"]
    model_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[arch]
    names = gguf.get_tensor_name_map(model_arch, n_layers)

    writer = gguf.GGUFWriter(str(out_path), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_freq_base(config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if arch == "llama":
        writer.add_vocab_size(vocab_size)
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)

    tokens, types = _vocab(folder, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_tokenizer_pre(config, vocab_size, Path(source_gguf) if source_gguf else None))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)
    if arch == "llama" and vocab_size == 49152:
        writer.add_add_bos_token(False)  # as llama.cpp's converter does for this vocabulary size

    tied = config.get("tie_word_embeddings", False)
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ConversionError(f"No .safetensors weights in {folder}.")
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():
                if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
                    continue
                tensor = handle.get_tensor(key)
                if tensor.dtype not in (torch.float16, torch.float32):
                    tensor = tensor.to(torch.float32)
                data = tensor.numpy()
                if undo_permute and key.endswith(("q_proj.weight", "q_proj.bias")):
                    data = _permute(data, n_head, n_head)
                elif undo_permute and key.endswith(("k_proj.weight", "k_proj.bias")):
                    data = _permute(data, n_head, n_head_kv)
                new_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise ConversionError(f"Cannot map tensor {key!r} to a GGUF name.")
                if data.ndim <= 1 or new_name.endswith("_norm.weight"):
                    data = data.astype(np.float32)
                else:
                    data = data.astype(np.float16)
                writer.add_tensor(new_name, data)
    factors = _rope_factors(config, head_dim)
    if factors is not None:
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return out_path


def convert_with_llama_cpp(llama_cpp_dir: str | Path, folder: str | Path, out_path: str | Path) -> Path:
    """llama.cpp's own converter from a checkout (it runs with its own vendored gguf-py, not the PyPI package)."""
    script = Path(llama_cpp_dir) / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise ConversionError(f"No convert_hf_to_gguf.py in {llama_cpp_dir}: pass the root of a llama.cpp checkout.")
    completed = subprocess.run(
        [sys.executable, str(script), str(folder), "--outfile", str(out_path), "--outtype", "f16"],
        capture_output=True, text=True, env=_clean_env(),
    )
    if completed.returncode != 0:
        raise ConversionError(f"llama.cpp's converter failed: {completed.stderr[-2000:]}")
    return Path(out_path)


def _clean_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)
    return env
