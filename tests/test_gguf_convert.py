"""The built-in GGUF converter against llama.cpp's own convert_hf_to_gguf.py, and llama.cpp against PyTorch."""
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from rl.evaluation.backends import LlamaCppBackend, TorchBackend
from rl.evaluation.evalset import TokenizedPair
from rl.export.gguf_convert import ConversionError, convert_hf_to_gguf, convert_with_llama_cpp
from rl.export.verify import argmax_agreement

LLAMA_CPP_DIR = Path(os.environ.get("LLAMA_CPP_DIR", Path(__file__).resolve().parent.parent / ".cache" / "llama.cpp"))


@pytest.fixture(scope="module")
def converted(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return convert_hf_to_gguf(tiny_model_dir, folder / "ours.gguf")


def test_the_tensors_are_identical_to_llama_cpp_s_own_converter(tiny_model_dir, converted, tmp_path):
    assert (LLAMA_CPP_DIR / "convert_hf_to_gguf.py").is_file(), f"llama.cpp's converter is missing at {LLAMA_CPP_DIR}: run scripts/setup.sh"
    theirs = convert_with_llama_cpp(LLAMA_CPP_DIR, tiny_model_dir, tmp_path / "theirs.gguf")
    ours_reader, theirs_reader = gguf.GGUFReader(str(converted)), gguf.GGUFReader(str(theirs))
    ours = {t.name: t for t in ours_reader.tensors}
    reference = {t.name: t for t in theirs_reader.tensors}
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        assert ours[name].tensor_type == tensor.tensor_type, name
        assert list(ours[name].shape) == list(tensor.shape), name
        assert np.array_equal(np.asarray(ours[name].data), np.asarray(tensor.data)), name
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.chat_template",
                "llama.rope.dimension_count", "llama.attention.head_count_kv"):
        a, b = ours_reader.fields[key], theirs_reader.fields[key]
        assert [bytes(a.parts[i]) for i in a.data] == [bytes(b.parts[i]) for i in b.data], key


def test_llama_cpp_and_pytorch_predict_the_same_next_tokens(tiny_model_dir, converted):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    sequences = [torch.randint(0, 49152, (40,)).tolist() for _ in range(3)]
    agreement, positions = argmax_agreement(model, converted, sequences)
    assert positions == 120
    assert agreement >= 0.95


def test_both_backends_give_the_same_preference_accuracy(tiny_model_dir, converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    generator = torch.Generator().manual_seed(2)
    pairs = []
    for _ in range(24):
        prompt = tuple(torch.randint(0, 49152, (12,), generator=generator).tolist())
        pairs.append(TokenizedPair(prompt, tuple(torch.randint(0, 49152, (4,), generator=generator).tolist()),
                                   tuple(torch.randint(0, 49152, (5,), generator=generator).tolist())))
    # By construction: the chosen answer is the model's most likely next token, the rejected one its least likely.
    with torch.no_grad():
        logits = model(torch.tensor([pairs[0].prompt_ids])).logits[0, -1]
    pairs.append(TokenizedPair(pairs[0].prompt_ids, (int(logits.argmax()),), (int(logits.argmin()),)))
    torch_scores = TorchBackend("torch", model, tokenizer).answer_logps(pairs)
    backend = LlamaCppBackend("gguf", str(converted), tokenizer)
    gguf_scores = backend.answer_logps(pairs)
    backend.llm.close()
    assert torch_scores[-1][0] > torch_scores[-1][1] and gguf_scores[-1][0] > gguf_scores[-1][1]
    torch_accuracy = sum(c > r for c, r, _, _ in torch_scores) / len(pairs)
    gguf_accuracy = sum(c > r for c, r, _, _ in gguf_scores) / len(pairs)
    assert abs(torch_accuracy - gguf_accuracy) <= 0.01
    assert np.allclose([s[0] for s in torch_scores], [s[0] for s in gguf_scores], atol=0.05)


def test_an_unsupported_architecture_without_llama_cpp_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPTNeoXForCausalLM"]}')
    with pytest.raises(ConversionError, match="--llama-cpp-dir"):
        convert_hf_to_gguf(tmp_path, tmp_path / "out.gguf")
