"""evaluate_model on a tiny trained adapter, through PyTorch and through llama.cpp."""
import json
import logging

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


def test_the_base_is_scored_once_per_set_and_reused_by_later_runs_until_the_set_changes(tiny_run, tmp_path, monkeypatch):
    from rl.evaluation import evaluation_run

    scored = []
    real = evaluation_run.evaluate_backend

    def counting(backend, evalset, **kwargs):
        scored.append((backend.name, len(evalset.pairs)))
        return real(backend, evalset, **kwargs)

    monkeypatch.setattr(evaluation_run, "evaluate_backend", counting)

    def evaluate(limit: str) -> dict:
        output = tmp_path / f"results-{len(scored)}.json"
        call_command("evaluate_model", "--checkpoint", tiny_run, "--compare-base", "--limit", limit, "--output", str(output),
                     "--max-new-tokens", "8", "--decoding", "constrained")
        return json.loads(output.read_text())

    first, second = evaluate("6"), evaluate("6")
    base_runs = [name for name, _n in scored if name.startswith("base")]
    assert len(base_runs) == 1 and len(scored) == 3, scored  # base once, the adapter twice
    assert second["base"]["cached"] is True and "cached" not in first["base"]
    for key in ("preference_accuracy", "constrained_widget_accuracy", "constrained_fixture_accuracy"):
        assert second["base"][key] == first["base"][key]
    # The tuned model's rewards are measured against the base's log-probs: the same from the cache.
    assert second["tuned"]["mean_reward_margin"] == pytest.approx(first["tuned"]["mean_reward_margin"])
    evaluate("4")  # another set: the base is scored again
    assert [n for name, n in scored if name.startswith("base")] == [6, 4]


def test_with_the_base_scored_in_the_same_evaluation_the_tuned_model_skips_its_lower_layers_and_scores_the_same(
        demo_db, tiny_model_dir, checkpoints, tmp_path, monkeypatch, caplog):
    from rl.evaluation.lower_layers import LowerLayers
    from rl.training.run import run_training
    from tests.rl_cases import data, tiny_config

    result = run_training(tiny_config(tiny_model_dir, max_steps=2, lora_layer_share=0.5), data(), preset="cpu", run_name="top")
    assert result.status == "succeeded", result.error
    served = []
    real = LowerLayers.input_for
    def serving(self, *args):  # what the tuned model's batches got (the base's pass asks too, before `serve`)
        layer_input = real(self, *args)
        if self.serving:
            served.append(layer_input)
        return layer_input

    monkeypatch.setattr(LowerLayers, "input_for", serving)

    def evaluate() -> dict:
        output = tmp_path / f"results-{len(served)}.json"
        call_command("evaluate_model", "--checkpoint", "top", "--compare-base", "--limit", "6", "--output", str(output),
                     "--max-new-tokens", "8", "--decoding", "constrained")
        return json.loads(output.read_text())["tuned"]

    with caplog.at_level(logging.INFO, logger="rl.evaluation.evaluation_run"):
        shared = evaluate()
    assert served and all(layer_input is not None and layer_input.index == 1 for layer_input in served)
    assert f"{len(served)} of its scoring batches started at layer 1 from the base's pass" in caplog.text
    served.clear()
    whole = evaluate()  # the base's scores from its cache: no base pass, so the tuned model runs every layer
    assert served == []
    assert shared["preference_outcomes"] == whole["preference_outcomes"] and shared["n_pairs"] == 6
    assert shared["mean_logp_chosen"] == pytest.approx(whole["mean_logp_chosen"], abs=1e-4)
    assert shared["constrained_answers"] == whole["constrained_answers"]


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
