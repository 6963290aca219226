"""The parts of the training recipe that teach the decision: decision-weighted SFT, widget-balanced scenarios, and
keeping the adapter with the best held-out pick accuracy."""
import json
from collections import Counter

import pytest
import torch

from rl.core.config import ConfigError, training_config
from rl.core.prompts import Pick, render_pick
from rl.core.shared_prefix import PrefixSharingCollator, decision_token_count


@pytest.fixture(scope="module")
def tokenizer():
    from rl.core.base_model import load_tokenizer

    return load_tokenizer()


def test_the_decision_tokens_are_those_before_the_title(tokenizer):
    answer = render_pick(Pick("line_chart", ("hq_chiller_1_kw",), "Chiller 1 power, last 7 days"))
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    count = decision_token_count(tokenizer, ids)
    assert tokenizer.decode(ids[:count]).startswith('{"widget": "line_chart", "fixtures": ["hq_chiller_1_kw"]')
    assert "title" not in tokenizer.decode(ids[: count - 1])
    assert "title" in tokenizer.decode(ids[: count + 2])


def test_the_collator_weighs_title_tokens_of_chosen_answers_by_title_weight():
    rows = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, 6, 7], "rejected_ids": [8, 9], "chosen_decision_tokens": 2}]
    batch = PrefixSharingCollator(pad_token_id=0, title_weight=0.25)(rows)
    chosen = batch["score_answer"][0] == batch["pair_chosen"][0]
    assert batch["score_weight"][0][chosen].tolist() == [1.0, 1.0, 0.25, 0.25]
    assert batch["score_weight"][0][batch["score_answer"][0] == batch["pair_rejected"][0]].tolist() == [1.0, 1.0]


def test_a_title_weight_outside_0_to_1_is_refused():
    with pytest.raises(ConfigError, match="title_weight"):
        training_config("cpu", title_weight=2.0)


@pytest.mark.parametrize("eval_steps", [-0.5, 2.5])
def test_eval_steps_must_be_a_share_below_1_or_whole_steps(eval_steps):
    with pytest.raises(ConfigError, match="eval_steps"):
        training_config("cpu", eval_steps=eval_steps)
    assert training_config("cpu", eval_steps=0.25).eval_steps == 0.25


@pytest.mark.parametrize("share", [0.0, 1.5])
def test_a_lora_layer_share_outside_0_to_1_is_refused(share):
    with pytest.raises(ConfigError, match="lora_layer_share"):
        training_config("cpu", lora_layer_share=share)


def test_a_negative_neftune_alpha_is_refused():
    with pytest.raises(ConfigError, match="neftune_noise_alpha"):
        training_config("cpu", neftune_noise_alpha=-1.0)


@pytest.mark.parametrize("smoothing", [-0.1, 0.5])
def test_a_label_smoothing_outside_0_to_one_half_is_refused(smoothing):
    with pytest.raises(ConfigError, match="label_smoothing"):
        training_config("cpu", label_smoothing=smoothing)


def _pair_rows(widgets_per_scenario):
    from datasets import Dataset

    rows = []
    for index, (widget, n_pairs) in enumerate(widgets_per_scenario):
        chosen = [{"role": "assistant", "content": render_pick(Pick(widget, ("f",), "t"))}]
        rows += [{"scenario_id": f"s{index:03d}", "chosen": chosen, "rejected": chosen} for _ in range(n_pairs)]
    return Dataset.from_list(rows)


def test_balanced_selection_takes_scenarios_round_robin_over_their_widget():
    from rl.data.selection import chosen_widget, select_scenarios

    dataset = _pair_rows([("line_chart", 3)] * 30 + [("gauge", 3)] * 5 + [("table", 2)] * 5)
    picked = select_scenarios(dataset, 12, seed=0, balance=True)
    by_widget = Counter(chosen_widget(row) for row in picked)
    assert len(set(picked["scenario_id"])) == 12
    assert by_widget == {"line_chart": 12, "gauge": 12, "table": 8}  # 4 scenarios of each, all their pairs
    unbalanced = select_scenarios(dataset, 12, seed=0, balance=False)
    assert Counter(chosen_widget(row) for row in unbalanced)["line_chart"] > 12


def test_newly_rated_scenarios_are_taken_first_and_older_ones_fill_the_rest():
    from rl.data.selection import select_scenarios

    dataset = _pair_rows([("line_chart", 2)] * 20 + [("gauge", 2)] * 20)
    new = {f"s{index:03d}" for index in (3, 7, 25, 31, 38)}
    picked = set(select_scenarios(dataset, 8, seed=0, balance=True, first=new)["scenario_id"])
    assert new < picked and len(picked) == 8
    without = set(select_scenarios(dataset, 8, seed=0, balance=True)["scenario_id"])
    assert not new <= without  # the preference, not chance, put them in


def test_a_rating_changed_after_the_last_run_counts_as_new_like_in_the_buffer():
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    from rl.data.data_formatter import RatedEntry, Vote
    from rl.data.selection import rated_since

    watermark = datetime(2026, 11, 1, tzinfo=timezone.utc)
    before, after = watermark - timedelta(days=3), watermark + timedelta(hours=1)
    pick = Pick("gauge", ("f",), "t")
    snapshot = SimpleNamespace(entries=[
        RatedEntry("e1", "changed", pick, (Vote("ann", "down", before, updated_at=after),)),
        RatedEntry("e2", "old", pick, (Vote("ann", "up", before, updated_at=before),)),
        RatedEntry("e3", "new", pick, (Vote("bob", "up", after),)),  # from a file: no updated_at
    ])
    assert rated_since(snapshot, watermark.isoformat()) == {"changed", "new"}
    assert rated_since(snapshot, None) == set()


def _scripted_checks(tiny_model_dir, tmp_path, checks):
    """A BestPickCallback whose checks return `checks` (the metrics generation would give) in order, at steps 10, 20,
    ... of a LoRA model whose weights change before each; returns the callback, the adapter's weights at each step and
    the weights it put back when training ended."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from rl.training.callbacks import BestPickCallback

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    callback = BestPickCallback(evalset=None, tokenizer=None, metrics_path=tmp_path / "metrics.jsonl")
    scripted = iter(checks)
    callback.score = lambda model, bf16=False: next(scripted)

    class State:
        is_world_process_zero = True
        global_step = 0

    def weights():
        return {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}

    snapshots = {}
    for index in range(len(checks)):
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.1)
        State.global_step = 10 * (index + 1)
        callback.on_evaluate(None, State, None, model=model)
        snapshots[State.global_step] = weights()
    callback.on_train_end(None, State, None, model=model)
    return callback, snapshots, weights()


def test_the_best_pick_callback_puts_back_the_best_adapter_seen(tiny_model_dir, tmp_path):
    checks = [{"widget_accuracy": value, "fixture_accuracy": value} for value in (0.2, 0.6, 0.4)]
    callback, snapshots, kept = _scripted_checks(tiny_model_dir, tmp_path, checks)
    assert callback.best_step == 20
    assert all(torch.equal(kept[k], snapshots[20][k]) for k in kept)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["pick/score"] for row in logged] == [0.2, 0.6, 0.4]


@pytest.mark.parametrize(("counts", "kept_step"), [
    ([(10, 10), (12, 12), (12, 11)], 30),  # the last check is one fixture answer short of the best: the later is kept
    ([(10, 10), (12, 12), (11, 12), (12, 12)], 40),  # a tie with the best: the later
    ([(10, 10), (12, 12), (11, 11)], 20),  # two answers short: the best stays
    ([(12, 12), (12, 11), (11, 11)], 20),  # within one of the kept check but two short of the best: no drift downwards
    ([(12, 12), (13, 14), (12, 12)], 20),  # a clear gain, then a fall of three answers
])
def test_of_checks_within_one_question_of_the_best_the_later_adapter_is_kept(tiny_model_dir, tmp_path, counts, kept_step):
    # (right widgets, right fixtures) of 23 questions per check
    checks = [{"widget_accuracy": widgets / 23, "fixture_accuracy": fixtures / 23, "n_scenarios": 23} for widgets, fixtures in counts]
    callback, snapshots, kept = _scripted_checks(tiny_model_dir, tmp_path, checks)
    assert callback.best_step == kept_step
    assert all(torch.equal(kept[k], snapshots[kept_step][k]) for k in kept)
    assert callback.summary()["highest_pick_score"] == pytest.approx(max(w + f for w, f in counts) / 46)


def test_a_run_keeps_in_final_the_checkpoint_its_recorded_pick_scores_choose(demo_db, tiny_model_dir, checkpoints):
    """Real scoring: constrained answers of the model in training, at steps 2 and 4 (where checkpoints are saved)."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rl.core.base_model import load_tokenizer
    from rl.data.dataset_builder import build_dataset
    from rl.training.callbacks import pick_score
    from rl.training.run import best_pick_callback, run_training
    from tests.rl_cases import data, tiny_config

    config = tiny_config(tiny_model_dir, max_steps=4, save_steps=2, eval_steps=2, pick_eval_scenarios=3)
    result = run_training(config, data(), preset="cpu", run_name="best-pick")
    assert result.status == "succeeded", result.error
    best = result.metrics["best_pick"]
    assert [row["step"] for row in best["history"]] == [2, 4]
    scores = [row["pick/score"] for row in best["history"]]
    tokenizer = load_tokenizer(str(tiny_model_dir))
    callback = best_pick_callback(config, build_dataset(config, data(), tokenizer), tokenizer, checkpoints / "best-pick")
    # kept: the last check within one question of the best (one widget or fixture answer of the scenarios checked)
    tolerance = 1 / (2 * len(callback.evalset.cases))
    kept = [row for row in best["history"] if row["pick/score"] >= max(scores) - tolerance - 1e-9][-1]
    assert best["highest_pick_score"] == max(scores)
    assert best["best_step"] == kept["step"] and best["best_pick_score"] == kept["pick/score"]

    run_dir = checkpoints / "best-pick"
    final = load_file(run_dir / "final" / "adapter_model.safetensors")
    saved = {step: load_file(run_dir / "checkpoints" / f"checkpoint-{step}" / "adapter_model.safetensors") for step in (2, 4)}
    assert any(not torch.equal(saved[2][k], saved[4][k]) for k in final)  # training moved the adapter between them
    assert all(torch.equal(final[k], saved[best["best_step"]][k]) for k in final)

    # scored again from final/, on the same held-out scenarios, the kept adapter has its recorded score
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(run_dir / "final"))
    assert pick_score(callback.score(model)) == pytest.approx(best["best_pick_score"])


@pytest.mark.parametrize(("mean_counts", "keeps_mean"), [((13, 13), True), ((12, 12), True), ((11, 11), False)])
def test_the_mean_adapter_of_the_later_steps_is_checked_last_and_kept_within_one_question(tiny_model_dir, tmp_path, mean_counts, keeps_mean):
    """average_adapter_from 0.5 over 4 steps: the mean of the weights after steps 3 and 4, checked after the last check
    (12 widgets and 12 fixtures right of 23) like another checkpoint."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    from rl.training.callbacks import BestPickCallback

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    callback = BestPickCallback(evalset=None, tokenizer=None, metrics_path=tmp_path / "metrics.jsonl", average_from=0.5)
    scripted = iter([{"widget_accuracy": w / 23, "fixture_accuracy": f / 23, "n_scenarios": 23} for w, f in [(10, 10), (12, 12), mean_counts]])
    callback.score = lambda model, bf16=False: next(scripted)

    class State:
        is_world_process_zero = True
        global_step = 0
        max_steps = 4

    after_step = {}
    for step in range(1, 5):
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.1 * step)
        State.global_step = step
        callback.on_step_end(None, State, None, model=model)
        after_step[step] = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
        if step % 2 == 0:
            callback.on_evaluate(None, State, None, model=model)
    callback.on_train_end(None, State, None, model=model)

    kept = get_peft_model_state_dict(model)
    expected = {k: (after_step[3][k] + after_step[4][k]) / 2 for k in kept} if keeps_mean else after_step[4]
    assert all(torch.allclose(kept[k], expected[k], atol=1e-6) for k in kept)
    summary = callback.summary()
    assert summary["averaged_steps"] == [3, 4] and summary["kept_average"] is keeps_mean
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row.get("pick/averaged_steps") for row in logged] == [None, None, "3-4"]


def test_a_run_with_average_adapter_from_checks_the_mean_adapter_and_records_it(demo_db, tiny_model_dir, checkpoints):
    from rl.training.run import run_training
    from tests.rl_cases import data, tiny_config

    config = tiny_config(tiny_model_dir, max_steps=4, eval_steps=2, pick_eval_scenarios=3, average_adapter_from=0.5)
    result = run_training(config, data(), preset="cpu", run_name="averaged")
    assert result.status == "succeeded", result.error
    best = result.metrics["best_pick"]
    assert best["averaged_steps"] == [3, 4]
    assert [(row["step"], row.get("pick/averaged_steps")) for row in best["history"]] == [(2, None), (4, None), (4, "3-4")]


def test_average_adapter_from_must_be_a_share_below_one():
    with pytest.raises(ConfigError, match="average_adapter_from"):
        training_config("cpu", average_adapter_from=1.0)
