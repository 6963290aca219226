"""The importance matrix the export quantizes with (rl/export/importance.py), on a tiny random Llama and its GGUF."""
import numpy as np
import pytest
from django.core.management import CommandError, call_command

from rl.export.exporter import export_to_ollama
from rl.export.importance import activation_importance, gguf_matrix_columns, gguf_tensor_names, importance_for_gguf, matching_importance
from rl.export.quantize import quantize_gguf, tensor_types


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="module")
def tiny_f16(tiny_model_dir, tmp_path_factory):
    from rl.export.gguf_convert import convert_hf_to_gguf

    return convert_hf_to_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "model-f16.gguf")


def test_every_layer_matrix_gets_its_gguf_name_and_input_width(tiny_model, tiny_f16):
    names = gguf_tensor_names(tiny_model, "llama")
    columns = gguf_matrix_columns(tiny_f16)
    expected = {f"blk.{layer}.{kind}.weight" for layer in range(2)
                for kind in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(names) == expected
    assert names["blk.1.ffn_down.weight"] == "model.layers.1.mlp.down_proj"
    assert columns["blk.0.ffn_down.weight"] == 128 and columns["blk.0.attn_q.weight"] == 64
    assert gguf_tensor_names(tiny_model, "an-architecture-gguf-does-not-know") == {}


def test_the_importance_is_the_mean_square_of_each_input_column(tiny_model, tiny_f16):
    import torch

    sequences = [[1, 9690, 198, 2683], [1, 400, 17, 5, 88, 12]]
    importance = activation_importance(tiny_model, sequences, gguf_tensor_names(tiny_model, "llama"))
    # The first layer's q, k and v read the normed token embeddings, which need no attention to compute.
    with torch.no_grad():
        normed = torch.cat([tiny_model.model.layers[0].input_layernorm(tiny_model.model.embed_tokens(torch.tensor(s))) for s in sequences])
    expected = (normed.double() ** 2).mean(0).numpy()
    for tensor in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"):
        np.testing.assert_allclose(importance[tensor], expected, rtol=1e-5)
    assert importance["blk.1.ffn_down.weight"].shape == (128,) and (importance["blk.1.ffn_down.weight"] > 0).all()
    assert not any(module._forward_hooks for module in tiny_model.modules())  # the hooks are removed


def test_quantizing_with_it_keeps_the_types_and_changes_the_rounding(tiny_model, tiny_f16, tmp_path):
    from rl.core.base_model import load_tokenizer
    from rl.core.prompts import build_messages
    from tests.rl_cases import CATALOG, SCENARIOS

    prompts = [build_messages(scenario, CATALOG) for scenario in SCENARIOS.values()]
    importance = importance_for_gguf(tiny_model, load_tokenizer(), prompts, tiny_f16)
    assert len(importance) == 14
    plain = quantize_gguf(tiny_f16, tmp_path / "plain.gguf", "q4_k_m")
    weighted = quantize_gguf(tiny_f16, tmp_path / "weighted.gguf", "q4_k_m", importance=importance)
    assert (plain.importance_tensors, weighted.importance_tensors) == (0, 14)
    assert tensor_types(tmp_path / "plain.gguf") == tensor_types(tmp_path / "weighted.gguf")
    assert (tmp_path / "plain.gguf").read_bytes() != (tmp_path / "weighted.gguf").read_bytes()
    # llama.cpp refuses an entry whose width is not the tensor's; those are left out before it is called
    wrong = {**importance, "blk.0.attn_q.weight": np.ones(7, dtype=np.float32), "blk.9.attn_q.weight": np.ones(64, dtype=np.float32)}
    assert set(matching_importance(wrong, tiny_f16)) == set(importance) - {"blk.0.attn_q.weight"}


def test_the_export_quantizes_with_the_run_s_prompts_when_asked(tiny_run, capsys):
    assert export_to_ollama(tiny_run, quantization="q4_k_m", check_pick=False).quantize["importance_tensors"] == 0
    call_command("export_model", "--checkpoint", tiny_run, "--quantization", "q4_k_m", "--skip-pick-check", "--imatrix", "4")
    printed = capsys.readouterr().out
    assert "status: exported" in printed and "importance matrix: 14 tensors" in printed
    assert export_to_ollama(tiny_run, quantization="f16", check_pick=False, importance_prompts=4).quantize["importance_tensors"] == 0
    with pytest.raises(CommandError, match="--imatrix takes a number of prompts"):
        call_command("export_model", "--checkpoint", tiny_run, "--imatrix", "-2")
