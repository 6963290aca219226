"""EVA: LoRA's A matrices started at the principal directions of the adapted layers' inputs (rl/training/eva.py)."""
import pytest
import torch
from peft import EvaConfig, LoraConfig, get_eva_state_dict, get_peft_model
from transformers import AutoModelForCausalLM

from rl.core.config import ConfigError
from rl.models import TrainingRun
from rl.training.eva import eva_initialize, principal_input_directions
from rl.training.run import run_training
from tests.rl_cases import data, tiny_config

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def adapted(tiny_model_dir, seed: int, rank: int = 4):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=MODULES))


def batches(n: int = 3, rows: int = 4, length: int = 24) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(10, 2000, (rows, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[0, length // 2:] = 0  # a padded row: its padding is not read
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def layer_inputs(model, name: str, data: list[dict]) -> torch.Tensor:
    """The module's unpadded inputs over `data`, adapters off, captured apart from the code under test."""
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    with torch.no_grad(), model.disable_adapter():
        for batch in data:
            model(**batch)
            seen[-1] = seen[-1][batch["attention_mask"].bool()]
    handle.remove()
    return torch.cat(seen).double()


def captured_variance(directions: torch.Tensor, inputs: torch.Tensor) -> float:
    """The share of the inputs' variance in the span of `directions`' rows."""
    centered = inputs - inputs.mean(0)
    basis = torch.linalg.qr(directions.double().T).Q
    return float((centered @ basis).pow(2).sum() / centered.pow(2).sum())


def test_eva_starts_a_no_op_adapter_with_orthonormal_a_rows_whatever_the_seed(tiny_model_dir):
    data = batches()
    starts = []
    for seed in (1, 2):
        model = adapted(tiny_model_dir, seed)
        before = model(**data[0]).logits
        assert eva_initialize(model, data) == 2 * len(MODULES)
        assert torch.equal(model(**data[0]).logits, before), "B is zero: the adapter starts as a no-op"
        a = {name: m.lora_A["default"].weight.detach().clone() for name, m in model.named_modules() if "default" in getattr(m, "lora_A", {})}
        for weight in a.values():
            assert torch.allclose(weight @ weight.T, torch.eye(weight.shape[0]), atol=1e-5)
        starts.append(a)
    assert starts[0].keys() == starts[1].keys()
    for name in starts[0]:
        assert torch.allclose(starts[0][name], starts[1][name], atol=1e-5), f"{name}: EVA's start does not depend on the seed"
    default = [adapted(tiny_model_dir, seed).base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight for seed in (1, 2)]
    assert not torch.allclose(default[0], default[1]), "PEFT's default start does"


def test_the_directions_capture_the_most_input_variance_as_pefts_eva_finds_them(tiny_model_dir):
    data = batches(n=6)
    model = adapted(tiny_model_dir, seed=1)
    ours = principal_input_directions(model, data)
    config = LoraConfig(**{**model.peft_config["default"].to_dict(), "init_lora_weights": "eva", "eva_config": EvaConfig(rho=1.0, tau=0.999)})
    pefts = get_eva_state_dict(model, data, peft_config=config, show_progress_bar=False)
    name = "base_model.model.model.layers.1.mlp.down_proj"
    inputs = layer_inputs(model, name, data)
    random_start = model.get_submodule(name).lora_A["default"].weight.detach()
    ours_share, peft_share = captured_variance(ours[name], inputs), captured_variance(pefts[name], inputs)
    assert ours_share >= peft_share - 1e-3, (ours_share, peft_share)
    assert ours_share > 2 * captured_variance(random_start, inputs)  # a flat spectrum: the random model's
    # The k and v projections read q's input: the same directions.
    layer = "base_model.model.model.layers.0.self_attn."
    assert torch.equal(ours[layer + "q_proj"], ours[layer + "v_proj"])
    assert not torch.equal(ours[layer + "q_proj"], ours[layer + "o_proj"])


def test_lora_init_eva_cannot_continue_a_trained_adapter(tiny_model_dir, tmp_path):
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="lora_init eva"):
        tiny_config(tiny_model_dir, lora_init="eva", init_adapter=str(adapter))


@pytest.mark.django_db
def test_a_run_with_eva_trains_and_records_it(demo_db, tiny_model_dir, checkpoints, caplog):
    caplog.set_level("INFO", logger="rl.training.eva")
    result = run_training(tiny_config(tiny_model_dir, lora_init="eva", max_steps=2), data(), preset="cpu", run_name="eva-run")
    assert result.status == "succeeded", result.error
    assert TrainingRun.objects.get(name="eva-run").config["lora_init"] == "eva"
    assert any("EVA: the A matrices of 14 adapted modules" in r.getMessage() for r in caplog.records)
