"""On-policy rejected answers (rl/training/policy_negatives.py): each training pair rejects the down-rated pick the
continued adapter finds likeliest."""
from __future__ import annotations

import json

import pytest

from rl.core.config import ConfigError, training_config
from rl.core.prompts import assistant_message, parse_pick
from rl.data.data_formatter import can_reject, entry_verdicts, format_preferences
from rl.data.snapshot import load_snapshot_from_files
from rl.evaluation.evalset import answer_ids, tokenize_prompt
from rl.training.policy_negatives import choose_policy_rejected


def _first_departure_logp(model, tokenizer, row, pick, snapshot) -> float:
    """The candidate's own sequence run whole: log-probability of its first token that differs from the chosen answer."""
    import torch

    prompt_ids = tokenize_prompt(tokenizer, row["prompt"])
    chosen = answer_ids(tokenizer, row["prompt"], row["chosen"], prompt_ids)
    other = answer_ids(tokenizer, row["prompt"], assistant_message(pick, snapshot.scenarios[row["scenario_id"]], snapshot.catalog), prompt_ids)
    index = next(i for i, (a, b) in enumerate(zip(chosen, other)) if a != b)
    sequence = torch.tensor([prompt_ids + list(other)])
    with torch.no_grad():
        logits = model(input_ids=sequence).logits[0, len(prompt_ids) + index - 1].float()
    return float(torch.log_softmax(logits, dim=-1)[other[index]])


def test_each_rated_pair_rejects_the_down_rated_pick_the_model_finds_likeliest(demo_paths, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    snapshot = load_snapshot_from_files(*demo_paths)
    rows = format_preferences(snapshot.entries, snapshot.scenarios, snapshot.catalog, max_pairs_per_scenario=1, seed=0).pairs
    rated = [r for r in rows if r["origin"] == "ratings"]
    rows = ([r for r in rows if r["origin"] == "correction"][:1] + [r for r in rated if r["kind"] == "widget"][:5]
            + [r for r in rated if r["kind"] == "fixture"][:4])
    assert {r["kind"] for r in rows if r["origin"] == "ratings"} == {"widget", "fixture"}
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    result, changed = choose_policy_rejected(rows, snapshot, model, tokenizer, batch_size=3)

    verdicts = entry_verdicts(snapshot.entries)
    assert len(result) == len(rows)
    for before, after in zip(rows, result):
        assert after["prompt"] == before["prompt"] and after["chosen"] == before["chosen"]
        if before["origin"] == "correction":
            assert after == before
            continue
        chosen = parse_pick(before["chosen"][0]["content"], snapshot.catalog)
        downs = [e.pick for e in snapshot.entries if e.scenario_id == before["scenario_id"] and verdicts.get(e.entry_id) == "down"
                 and can_reject(before["kind"], chosen, e.pick)]
        scores = {pick: _first_departure_logp(model, tokenizer, before, pick, snapshot) for pick in downs}
        rejected = parse_pick(after["rejected"][0]["content"], snapshot.catalog)
        assert any(rejected.same_choice(pick) for pick in downs)
        best = max(scores.values())
        assert scores[next(p for p in downs if p.same_choice(rejected))] == pytest.approx(best, abs=1e-4)
    assert sum(changed.values()) == sum(
        not parse_pick(a["rejected"][0]["content"], snapshot.catalog).same_choice(parse_pick(b["rejected"][0]["content"], snapshot.catalog))
        for a, b in zip(result, rows))
    assert json.dumps(result)  # rows stay plain data for datasets


def test_policy_negatives_needs_an_adapter_to_continue():
    with pytest.raises(ConfigError, match="policy_negatives needs init_adapter"):
        training_config("cpu", policy_negatives=True)


def test_a_run_with_policy_negatives_records_what_it_changed_and_keeps_the_held_out_pairs(tiny_run, tiny_model_dir, checkpoints):
    from rl.core.runs import read_run_config
    from rl.training.run import load_run_dataset, run_training
    from tests.rl_cases import data, tiny_config

    first_dir = checkpoints / tiny_run
    config = tiny_config(tiny_model_dir, max_steps=1, init_adapter=str(first_dir / "final"), policy_negatives=True)
    result = run_training(config, data(), preset="cpu", run_name="on-policy")

    assert result.status == "succeeded", result.error
    saved = read_run_config(result.run_dir)
    assert saved["config"]["policy_negatives"] is True
    assert sum(saved["dataset_stats"]["policy_rejected"].values()) > 0
    first, _ = load_run_dataset(first_dir)
    second, _ = load_run_dataset(result.run_dir)
    assert second["eval"].to_list() == first["eval"].to_list()
    assert sorted(r["scenario_id"] for r in second["train"]) == sorted(r["scenario_id"] for r in first["train"])
    assert second["train"]["rejected"] != first["train"]["rejected"]
