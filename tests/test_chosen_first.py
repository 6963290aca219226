import json

import pytest

from rl.core.config import ConfigError, training_config
from rl.data.chosen_first import chosen_first


def test_the_chosen_fixtures_move_to_the_front_and_each_part_keeps_its_order():
    assert chosen_first(["a", "b", "c", "d", "e"], {"d", "b"}) == ["b", "d", "a", "c", "e"]
    assert chosen_first(["a", "b", "c"], {"a"}) == ["a", "b", "c"]
    assert chosen_first(["a", "b"], {"z"}) == ["a", "b"]


def test_chosen_first_and_question_word_dropout_together_are_refused():
    with pytest.raises(ConfigError, match="chosen_fixtures_first"):
        training_config("cpu", chosen_fixtures_first=True, question_word_dropout=0.1)


def _fixture_slugs(prompt: list[dict]) -> list[str]:
    after_heading = prompt[-1]["content"].split("\nFixtures:\n")[1]
    return [line[2:].split(":")[0] for line in after_heading.splitlines() if line.startswith("- ")]


def test_training_prompts_list_the_chosen_fixtures_first_and_answers_follow_while_held_out_prompts_keep_the_retriever_s(db):
    from feedback.demo import build_demo
    from feedback.services import feedback_import
    from rl.data.dataset_builder import prepare_training_dataset

    feedback_import(*build_demo(seed=5, scenario_count=48))  # enough questions that the retriever ranks some wrong

    plain = prepare_training_dataset("db", min_samples=10)
    first = prepare_training_dataset("db", min_samples=10, chosen_fixtures_first=True)
    assert first.dataset["eval"].to_list() == plain.dataset["eval"].to_list()
    assert len(first.dataset["train"]) == len(plain.dataset["train"])
    reordered = 0
    prompts_by_scenario: dict[str, list] = {}
    for before, after in zip(plain.dataset["train"], first.dataset["train"]):
        assert after["scenario_id"] == before["scenario_id"]
        offered, retrieved = _fixture_slugs(after["prompt"]), _fixture_slugs(before["prompt"])
        assert sorted(offered) == sorted(retrieved)
        chosen = json.loads(after["chosen"][0]["content"])
        chosen_before = json.loads(before["chosen"][0]["content"])
        assert sorted(chosen["fixtures"]) == sorted(chosen_before["fixtures"]) and chosen["widget"] == chosen_before["widget"]
        assert chosen["title"] == chosen_before["title"]
        if set(chosen["fixtures"]) <= set(retrieved):
            assert offered[:len(chosen["fixtures"])] == chosen["fixtures"]
        rejected = json.loads(after["rejected"][0]["content"])
        assert rejected["fixtures"] == sorted(rejected["fixtures"], key=lambda s: offered.index(s) if s in offered else len(offered))
        reordered += offered != retrieved
        prompts_by_scenario.setdefault(after["scenario_id"], []).append(after["prompt"])
    assert reordered > 0
    assert all(all(p == prompts[0] for p in prompts) for prompts in prompts_by_scenario.values())


def test_a_chosen_first_run_trains_on_bm25_s_lists_and_is_asked_held_out_questions_as_serving_asks(db, monkeypatch):
    from feedback.demo import build_demo
    from feedback.services import feedback_import
    from rl.data.dataset_builder import build_dataset

    monkeypatch.setenv("RL_SHORTLIST_DENSE_WEIGHT", "1")
    feedback_import(*build_demo(seed=5, scenario_count=48))
    config = training_config("cpu", min_samples=10)
    assert config.chosen_fixtures_first
    trained = build_dataset(config, {"source": "db"}, for_training=True)
    asked = build_dataset(config, {"source": "db"})
    assert (trained.snapshot.catalog.dense_weight, asked.snapshot.catalog.dense_weight) == (0.0, 1.0)
    assert set(trained.dataset["eval"]["scenario_id"]) == set(asked.dataset["eval"]["scenario_id"])
    lexical, served = trained.snapshot.catalog, asked.snapshot.catalog
    differ = 0
    for row in trained.dataset["eval"]:
        scenario = trained.snapshot.scenarios[row["scenario_id"]]
        assert _fixture_slugs(row["prompt"]) == lexical.shortlist_for(scenario)
        differ += lexical.shortlist_for(scenario) != served.shortlist_for(scenario)
    for row in asked.dataset["eval"]:
        assert _fixture_slugs(row["prompt"]) == served.shortlist_for(asked.snapshot.scenarios[row["scenario_id"]])
    assert differ > 0
