"""soup_adapters: several runs' adapters averaged into one run, and the split seed that lets runs share a held-out split."""
import json

import pytest
import torch
from django.core.management import CommandError, call_command
from safetensors.torch import load_file

from rl.core.runs import resolve_checkpoint
from rl.data.dataset_builder import build_dataset
from rl.models import TrainingRun
from rl.training.run import run_training
from tests.rl_cases import data, tiny_config

pytestmark = pytest.mark.django_db


def held_out_scenarios(config) -> set[str]:
    return set(build_dataset(config, data()).dataset["eval"]["scenario_id"])


def test_a_split_seed_holds_out_the_same_questions_whatever_the_seed(demo_db, tiny_model_dir):
    shared = [held_out_scenarios(tiny_config(tiny_model_dir, seed=seed, split_seed=5)) for seed in (1, 2)]
    own = [held_out_scenarios(tiny_config(tiny_model_dir, seed=seed)) for seed in (1, 2)]
    assert shared[0] == shared[1] == held_out_scenarios(tiny_config(tiny_model_dir, seed=5))
    assert own[0] != own[1]


def train(tiny_model_dir, name: str, seed: int, split_seed: int) -> str:
    result = run_training(tiny_config(tiny_model_dir, max_steps=2, seed=seed, split_seed=split_seed), data(), preset="cpu", run_name=name)
    assert result.status == "succeeded", result.error
    return name


def weight_deltas(adapter_dir) -> dict[str, torch.Tensor]:
    """Each adapted module's B A times its scaling, by module."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert not config.get("use_rslora") and not config.get("alpha_pattern") and not config.get("rank_pattern")
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return {key.removesuffix(".lora_A.weight"): weights[key.replace("lora_A", "lora_B")].float() @ weights[key].float()
            * config["lora_alpha"] / config["r"] for key in weights if key.endswith("lora_A.weight")}


def test_a_soup_is_the_mean_of_its_members_weight_deltas(demo_db, tiny_model_dir, checkpoints):
    members = [train(tiny_model_dir, f"member-{seed}", seed, split_seed=5) for seed in (1, 2, 3)]
    # PEFT lists target_modules in a set's order, which differs between the processes that trained the members.
    config_file = resolve_checkpoint(members[1])[0] / "adapter_config.json"
    adapter_config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**adapter_config, "target_modules": sorted(adapter_config["target_modules"], reverse=True)}))

    call_command("soup_adapters", *members, "--run-name", "soup")

    adapter_dir, run_config = resolve_checkpoint("soup")
    soup = weight_deltas(adapter_dir)
    member_deltas = [weight_deltas(resolve_checkpoint(m)[0]) for m in members]
    assert set(soup) == set(member_deltas[0]) and soup
    for module, delta in soup.items():
        mean = sum(d[module] for d in member_deltas) / len(members)
        assert torch.allclose(delta, mean, atol=1e-6), module
        assert not torch.allclose(delta, member_deltas[0][module], atol=1e-6), "the soup is not its first member"
    assert run_config["soup"]["members"] == members
    assert run_config["config"]["split_seed"] == 5
    run = TrainingRun.objects.get(name="soup")
    assert run.status == TrainingRun.Status.SUCCEEDED and run.adapter_dir == str(adapter_dir)
    first = TrainingRun.objects.get(name=members[0])
    assert (run.algo, run.base_model, run.data_source["stats"]) == (first.algo, first.base_model, first.data_source["stats"])
    assert run.data_source["soup_of"] == members
    assert (adapter_dir / "tokenizer_config.json").is_file()


def test_runs_of_different_splits_make_no_soup_and_nothing_is_written(demo_db, tiny_model_dir, checkpoints):
    first, other = train(tiny_model_dir, "split-5", 1, split_seed=5), train(tiny_model_dir, "split-6", 2, split_seed=6)

    with pytest.raises(CommandError, match="holds out other questions"):
        call_command("soup_adapters", first, other, "--run-name", "soup")
    with pytest.raises(CommandError, match="at least two runs"):
        call_command("soup_adapters", first, "--run-name", "soup")
    with pytest.raises(CommandError, match="named twice"):
        call_command("soup_adapters", first, first, "--run-name", "soup")
    with pytest.raises(CommandError, match="exists already"):
        call_command("soup_adapters", first, first, "--run-name", first)
    assert not (checkpoints / "soup").exists()
    assert not TrainingRun.objects.filter(name="soup").exists()
