"""evaluate_model on a tiny trained adapter, through PyTorch and through llama.cpp."""
import json

import pytest
from django.core.management import CommandError, call_command

from rl.export.gguf_convert import convert_hf_to_gguf
from rl.models import TrainingRun

REQUIRED = {"preference_accuracy", "valid_json_rate", "widget_accuracy", "fixture_accuracy", "n_pairs", "n_scenarios", "model"}


def test_it_compares_base_and_tuned_and_records_the_results(tiny_run, tmp_path, capsys):
    output = tmp_path / "results.json"
    call_command("evaluate_model", "--checkpoint", tiny_run, "--compare-base", "--limit", "6", "--output", str(output),
                 "--max-new-tokens", "8")
    results = json.loads(output.read_text())
    assert REQUIRED <= set(results["base"]) and REQUIRED | {"mean_reward_margin"} <= set(results["tuned"])
    assert results["tuned"]["n_pairs"] == 6 and results["data"]["split"] == "eval"
    assert "mean_reward_margin" not in results["base"]
    assert TrainingRun.objects.get(name="tiny").evaluation["held_out"]["tuned"]["n_pairs"] == 6
    assert output.with_suffix(".png").is_file()
    printed = capsys.readouterr().out
    assert "preference_accuracy" in printed and "diff" in printed


def test_it_evaluates_a_gguf_through_llama_cpp(tiny_model_dir, demo_db, tmp_path):
    gguf_file = convert_hf_to_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    output = tmp_path / "gguf.json"
    call_command("evaluate_model", "--gguf", str(gguf_file), "--base-model", str(tiny_model_dir), "--compare-base", "--limit", "8",
                 "--output", str(output), "--max-new-tokens", "8")
    results = json.loads(output.read_text())
    assert results["tuned"]["model"].startswith("gguf") and results["tuned"]["n_pairs"] == 8
    # The GGUF is the same tiny model as the PyTorch base: llama.cpp must score the same pairs the same way.
    gguf, torch = results["tuned"], results["base"]
    assert gguf["preference_accuracy"] == torch["preference_accuracy"]
    for key in ("mean_logp_chosen", "mean_logp_rejected"):
        assert gguf[key] == pytest.approx(torch[key], rel=1e-3), key
    assert abs(gguf["mean_reward_margin"]) < 1e-3  # against itself as the reference: no reward either way


def test_a_missing_checkpoint_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="No trained adapter"):
        call_command("evaluate_model", "--checkpoint", str(tmp_path / "nope"))
    with pytest.raises(CommandError, match="Nothing to evaluate"):
        call_command("evaluate_model")


def test_natural_and_a_data_file_together_are_refused(db):
    with pytest.raises(CommandError, match="--natural"):
        call_command("evaluate_model", "--compare-base", "--natural", "--data-file", "x.json", "--ratings-file", "y.json")
