import pytest

from rl.core.prompts import Pick
from rl.evaluation.evalset import EvaluationError, GenerationCase, build_eval_set
from rl.evaluation.metrics import generation_metrics, preference_metrics
from tests.rl_cases import CATALOG


def test_preference_accuracy_counts_pairs_whose_chosen_answer_is_more_likely():
    logps = [(-1.0, -2.0, 1, 1), (-3.0, -2.0, 1, 1), (-1.0, -1.5, 1, 1), (-2.0, -2.0, 1, 1)]
    metrics = preference_metrics(logps)
    assert metrics["n_pairs"] == 4
    assert metrics["preference_accuracy"] == 0.5  # the tie counts as wrong
    assert metrics["preference_ties"] == 1


def test_the_normalized_variant_compares_per_token_log_probs():
    # chosen is less likely in total (-3 vs -2) but more likely per token (-1 vs -2)
    metrics = preference_metrics([(-3.0, -2.0, 3, 1)])
    assert metrics["preference_accuracy"] == 0.0
    assert metrics["preference_accuracy_normalized"] == 1.0


def test_reward_margin_is_measured_against_the_reference():
    tuned = [(-1.0, -4.0, 1, 1), (-2.0, -2.0, 1, 1)]
    reference = [(-2.0, -2.0, 1, 1), (-1.0, -3.0, 1, 1)]
    metrics = preference_metrics(tuned, reference, beta=0.5)
    # pair 1: 0.5 * ((-1 - -2) - (-4 - -2)) = 1.5 ; pair 2: 0.5 * ((-2 - -1) - (-2 - -3)) = -1.0
    assert metrics["mean_reward_margin"] == pytest.approx(0.25)
    assert metrics["reward_accuracy"] == 0.5


def case(widget: str, *fixtures: str) -> GenerationCase:
    return GenerationCase("s", (1, 2), (Pick(widget, fixtures, "t"),))


def test_generation_metrics_score_widgets_fixtures_and_count_parse_failures():
    cases = [case("line_chart", "chiller_1_kw"), case("table", "open_work_orders"), case("gauge", "chiller_1_kw", "outdoor_air_temp"),
             case("kpi_card", "chiller_2_kw"), case("kpi_card", "chiller_2_kw")]
    answers = [
        '```json\n{"widget": "line_chart", "fixtures": ["chiller_1_kw"], "title": "x"}\n```',
        '{"widget": "kpi_card", "fixtures": ["open_work_orders"]}',
        '{"widget": "gauge", "fixtures": ["chiller_1_kw"]}',
        "a KPI card would be nice",
        '{"widget": "hologram", "fixtures": ["chiller_2_kw"]}',
    ]
    metrics = generation_metrics(answers, cases, CATALOG)
    assert metrics["n_scenarios"] == 5
    assert metrics["valid_json_rate"] == pytest.approx(4 / 5)
    assert metrics["known_widget_rate"] == pytest.approx(3 / 5)
    assert metrics["widget_accuracy"] == pytest.approx(2 / 5)
    assert metrics["fixture_accuracy"] == pytest.approx(2 / 5)
    assert metrics["fixture_overlap"] == pytest.approx((1 + 1 + 0.5 + 0 + 0) / 5)
    assert metrics["parse_failures"] == {"no_json": 1, "unknown_widget": 1}
    assert metrics["widget_confusion"]["table"] == {"kpi_card": 1}
    assert metrics["widget_confusion"]["kpi_card"] == {"<no_json>": 1, "<unknown_widget>": 1}


def test_an_empty_eval_set_is_a_clear_error():
    class Snapshot:
        entries, scenarios, catalog = [], {}, CATALOG

    with pytest.raises(EvaluationError, match="evaluation set is empty"):
        build_eval_set([], Snapshot(), set(), tokenizer=None)


def _answer(widget: str) -> str:
    return f'{{"widget": "{widget}", "fixtures": ["chiller_1_kw"], "title": "t"}}'


def test_the_collapse_warning_fires_when_one_widget_takes_the_answers():
    cases = [case(w, "chiller_1_kw") for w in ("line_chart", "kpi_card", "table", "gauge")] * 3
    metrics = generation_metrics([_answer("line_chart")] * len(cases), cases, CATALOG)
    assert metrics["predicted_share"] == {"line_chart": 1.0}
    assert len(metrics["collapse_warnings"]) == 1 and metrics["collapse_warnings"][0].startswith("line_chart is 100%")
    assert metrics["per_widget"]["line_chart"]["precision"] == 0.25 and metrics["per_widget"]["line_chart"]["recall"] == 1.0
    assert metrics["per_widget"]["table"]["recall"] == 0.0


def test_the_collapse_warning_is_silent_on_balanced_answers_even_when_some_are_wrong():
    widgets = ("line_chart", "kpi_card", "table", "gauge")
    cases = [case(w, "chiller_1_kw") for w in widgets] * 3
    answers = [_answer(widgets[(i + (i % 3 == 0)) % 4]) for i in range(len(cases))]  # a third wrong, still spread out
    metrics = generation_metrics(answers, cases, CATALOG)
    assert metrics["widget_accuracy"] < 1.0
    assert metrics["collapse_warnings"] == []


def test_the_evaluation_set_s_cases_are_decoded_under_the_decision_schema(demo_db):
    """Evaluation, the gate and the training's pick checks all decode a case under its schema: the answer schema
    with an empty title (`decision_schema`), so every answer ends with its decision."""
    from rl.core.base_model import load_tokenizer
    from rl.core.prompts import answer_schema, decision_schema
    from rl.data.dataset_builder import prepare_training_dataset

    snapshot = prepare_training_dataset("db", min_samples=10).snapshot
    evalset = build_eval_set([], snapshot, set(snapshot.scenarios), load_tokenizer())
    assert evalset.cases
    for case in evalset.cases:
        assert case.schema == decision_schema(answer_schema(snapshot.scenarios[case.scenario_id], snapshot.catalog))
        assert case.schema["properties"]["title"] == {"type": "string", "maxLength": 0}
        assert list(case.schema["properties"]) == ["widget", "fixtures", "title"]


def test_retriever_agreement_sets_each_answer_against_the_shortlist_s_top_k():
    import json

    from rl.core.prompts import ScenarioText
    from rl.evaluation.retriever_agreement import retriever_agreement

    scenarios = {"power": ScenarioText("chiller 1 power"), "orders": ScenarioText("chiller 2 orders"),
                 "pair": ScenarioText("chiller 1 power against outdoor air temperature")}
    assert CATALOG.shortlist_for(scenarios["power"])[0] == "chiller_1_kw"
    assert CATALOG.shortlist_for(scenarios["orders"])[0] == "chiller_2_kw"  # the retriever's first is wrong there
    right = {"power": [Pick("kpi_card", ("chiller_1_kw",))], "orders": [Pick("table", ("open_work_orders",))],
             "pair": [Pick("line_chart", ("chiller_1_kw", "outdoor_air_temp"))]}

    def answer(scenario_id, *fixtures):
        return {"scenario_id": scenario_id, "answer": json.dumps({"widget": "table", "fixtures": list(fixtures), "title": ""})}

    followed = retriever_agreement([answer("power", "chiller_1_kw"), answer("orders", "chiller_2_kw")], right, CATALOG, scenarios)
    assert (followed.both_right, followed.answer_wrong_retriever_right, followed.both_wrong) == (1, 0, 1)
    assert followed.left_order_rightly == followed.left_order_wrongly == 0 and followed.retriever_accuracy == 0.5
    overruled = retriever_agreement([answer("power", "chiller_2_kw"), answer("orders", "open_work_orders"), answer("pair", "chiller_1_kw"),
                                     {"scenario_id": "pair", "answer": "not json"}], right, CATALOG, scenarios)
    assert (overruled.answer_wrong_retriever_right, overruled.answer_right_retriever_wrong) == (3, 1)
    assert (overruled.left_order_wrongly, overruled.left_order_rightly, overruled.answers) == (2, 1, 4)  # "pair": its one fixture is not the first
