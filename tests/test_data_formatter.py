import dataclasses
import json

from rl.core.prompts import Pick, ScenarioText, fixtures_in_answer_order
from rl.data.data_formatter import (
    WidgetPush, build_correction_pairs, build_fixture_dpo_pairs, build_widget_dpo_pairs, entry_verdicts, format_preferences,
    offered_competitor_rank, shared_leading_fixtures,
)
from tests.rl_cases import CATALOG, SCENARIOS, entry, vote


def picks(rows, side):
    return [json.loads(row[side][0]["content"]) for row in rows]


def test_a_widget_pair_is_an_up_and_a_down_pick_for_the_same_scenario():
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
        entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("down")),
        entry("c", "s2", "gauge", ("open_work_orders",), vote("down")),
    ]
    rows = build_widget_dpo_pairs(entries, SCENARIOS, CATALOG)
    assert len(rows) == 1
    assert picks(rows, "chosen")[0]["widget"] == "line_chart"
    assert picks(rows, "rejected")[0]["widget"] == "kpi_card"
    assert rows[0]["scenario_id"] == "s1"


def test_pairs_are_never_formed_across_scenarios():
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
        entry("c", "s2", "gauge", ("open_work_orders",), vote("down")),
    ]
    assert build_widget_dpo_pairs(entries, SCENARIOS, CATALOG) == []


def test_rows_are_in_trl_conversational_format():
    entries = [entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")), entry("b", "s1", "table", ("chiller_1_kw",), vote("down"))]
    row = build_widget_dpo_pairs(entries, SCENARIOS, CATALOG)[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"


def test_the_pairs_per_scenario_cap_spreads_over_entries():
    ups = [entry(f"u{i}", "s1", w, ("chiller_1_kw",), vote("up")) for i, w in enumerate(["line_chart", "gauge"])]
    downs = [entry(f"d{i}", "s1", w, ("chiller_1_kw",), vote("down")) for i, w in enumerate(["kpi_card", "table"])]
    rows = build_widget_dpo_pairs(ups + downs, SCENARIOS, CATALOG, max_pairs_per_scenario=2)
    assert len(rows) == 2
    # Two pairs must use both chosen and both rejected entries: no single popular entry takes both.
    assert {p["widget"] for p in picks(rows, "chosen")} == {"line_chart", "gauge"}
    assert {p["widget"] for p in picks(rows, "rejected")} == {"kpi_card", "table"}


def test_hard_widget_negatives_reject_the_widgets_the_same_fixture_is_shown_with_elsewhere():
    # s1 asks for chiller 1's trend; in s2 chiller 1 power was rightly shown as a KPI card and as a gauge.
    s1 = [entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up"))] + [
        entry(f"d{i}", "s1", widget, ("chiller_1_kw",), vote("down"))
        for i, widget in enumerate(["table", "alarm_list", "kpi_card", "pie_chart", "gauge", "status_grid"])
    ]
    s2 = [entry("k", "s2", "kpi_card", ("chiller_1_kw",), vote("up")), entry("g", "s2", "gauge", ("chiller_1_kw",), vote("up")),
          entry("t", "s2", "table", ("chiller_1_kw",), vote("down"))]
    for seed in range(5):
        rows = [r for r in build_widget_dpo_pairs(s1 + s2, SCENARIOS, CATALOG, max_pairs_per_scenario=2, seed=seed, hard_negatives=True)
                if r["scenario_id"] == "s1"]
        assert {p["widget"] for p in picks(rows, "rejected")} == {"kpi_card", "gauge"}
    plain = [{p["widget"] for p in picks([r for r in build_widget_dpo_pairs(s1 + s2, SCENARIOS, CATALOG, max_pairs_per_scenario=2, seed=seed)
                                           if r["scenario_id"] == "s1"], "rejected")} for seed in range(5)]
    assert any(widgets != {"kpi_card", "gauge"} for widgets in plain)  # without the option the negatives are random


CHILLER_QUESTIONS = {f"q{i}": ScenarioText(f"Chiller 1 power, view {i}", "HQ") for i in range(8)}


def _line_charts_pushed_up_then_a_kpi_question():
    # q0-q2: the line chart is right and the table the only wrong pick, so three pairs push line_chart up and table down.
    # q3: the KPI card is right; line chart, table and gauge are wrong: which one its pair rejects is the choice.
    entries = [e for i in range(3) for e in (entry(f"u{i}", f"q{i}", "line_chart", ("chiller_1_kw",), vote("up")),
                                             entry(f"d{i}", f"q{i}", "table", ("chiller_1_kw",), vote("down")))]
    entries.append(entry("u3", "q3", "kpi_card", ("chiller_1_kw",), vote("up")))
    entries += [entry(f"d3{w}", "q3", w, ("chiller_1_kw",), vote("down")) for w in ("line_chart", "table", "gauge")]
    return entries


def _q3_rejected(entries, seed, push):
    rows = build_widget_dpo_pairs(entries, CHILLER_QUESTIONS, CATALOG, max_pairs_per_scenario=1, seed=seed, widget_push=push)
    return next(p["widget"] for p, row in zip(picks(rows, "rejected"), rows) if row["scenario_id"] == "q3")


def test_balanced_widget_negatives_reject_the_widget_pushed_up_most_so_far():
    entries = _line_charts_pushed_up_then_a_kpi_question()
    assert [_q3_rejected(entries, seed, WidgetPush()) for seed in range(6)] == ["line_chart"] * 6
    assert {_q3_rejected(entries, seed, None) for seed in range(6)} != {"line_chart"}  # without the option: random
    push = WidgetPush()
    build_widget_dpo_pairs(entries, CHILLER_QUESTIONS, CATALOG, max_pairs_per_scenario=1, widget_push=push)
    assert dict(push.counts[None]) == {"line_chart": 2, "table": -3, "kpi_card": 1}
    # Pushes are counted apart per group: with q3 in a group of its own nothing has been pushed there yet.
    apart = [_q3_rejected(entries, seed, WidgetPush(lambda scenario_id: scenario_id == "q3")) for seed in range(6)]
    assert set(apart) != {"line_chart"}


def test_balanced_widget_negatives_count_the_correction_pairs_first():
    entries = _line_charts_pushed_up_then_a_kpi_question()
    # Corrections in q4-q7 choose the gauge over a table: the gauge is pushed up four times, the line chart three.
    corrected = Pick("gauge", ("chiller_1_kw",), "")
    entries += [entry(f"c{i}", f"q{4 + i}", "table", ("chiller_1_kw",), vote("down", rater=f"r{i}", corrected=corrected))
                for i in range(4)]
    for seed in range(4):
        rows = format_preferences(entries, CHILLER_QUESTIONS, CATALOG, max_pairs_per_scenario=1, seed=seed,
                                  balanced_widget_negatives=True).pairs
        assert [p["widget"] for p, row in zip(picks(rows, "rejected"), rows) if row["scenario_id"] == "q3" and row["kind"] == "widget"] == ["gauge"]


def test_a_fixture_pair_keeps_scenario_and_widget_and_shows_fixture_descriptions():
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
        entry("b", "s1", "line_chart", ("chiller_2_kw",), vote("down")),
        entry("c", "s1", "kpi_card", ("chiller_2_kw",), vote("down")),
    ]
    rows = build_fixture_dpo_pairs(entries, SCENARIOS, CATALOG)
    assert len(rows) == 1
    assert picks(rows, "chosen")[0]["fixtures"] == ["chiller_1_kw"]
    assert picks(rows, "rejected")[0] == {"widget": "line_chart", "fixtures": ["chiller_2_kw"], "title": "title"}
    assert "Electrical power of chiller 1, kW." in rows[0]["prompt"][1]["content"]


def rejected_fixtures_by_seed(entries, **options):
    """The one fixture pair's rejected fixtures for each of six formatter seeds."""
    return [picks(build_fixture_dpo_pairs(entries, SCENARIOS, CATALOG, max_pairs_per_scenario=1, seed=seed, **options),
                  "rejected")[0]["fixtures"] for seed in range(6)]


def test_shared_leading_fixtures_counts_the_fixtures_two_answers_write_alike_before_they_part():
    shortlist = ["chiller_1_kw", "chiller_2_kw", "outdoor_air_temp"]
    pair = Pick("line_chart", ("outdoor_air_temp", "chiller_1_kw"), "")
    assert shared_leading_fixtures(pair, Pick("line_chart", ("chiller_1_kw",), ""), shortlist) == 1
    assert shared_leading_fixtures(pair, Pick("line_chart", ("outdoor_air_temp",), ""), shortlist) == 0
    assert shared_leading_fixtures(pair, Pick("line_chart", ("chiller_2_kw", "outdoor_air_temp"), ""), shortlist) == 0
    assert shared_leading_fixtures(pair, pair, shortlist) == 2


def test_hard_fixture_negatives_reject_the_pick_that_stops_after_the_chosen_first_fixture():
    chosen = ("chiller_1_kw", "outdoor_air_temp")
    first, second = fixtures_in_answer_order(chosen, CATALOG.shortlist_for(SCENARIOS["s1"]))
    entries = [entry("up", "s1", "line_chart", chosen, vote("up")),
               entry("d1", "s1", "line_chart", (first,), vote("down")),
               entry("d2", "s1", "line_chart", (second,), vote("down")),
               entry("d3", "s1", "line_chart", ("chiller_2_kw", second), vote("down")),
               entry("d4", "s1", "line_chart", ("open_work_orders", second), vote("down"))]
    assert rejected_fixtures_by_seed(entries, hard_negatives=True) == [[first]] * 6
    assert any(fixtures != [first] for fixtures in rejected_fixtures_by_seed(entries))  # without the option the rejected pick is random


def test_offered_competitor_rank_is_highest_for_the_best_match_and_zero_off_the_shortlist():
    shortlist = ["chiller_1_kw", "chiller_2_kw", "outdoor_air_temp"]
    chosen = Pick("line_chart", ("chiller_2_kw",), "")
    ranks = [offered_competitor_rank(chosen, Pick("line_chart", (fixture,), ""), shortlist)
             for fixture in ("chiller_1_kw", "outdoor_air_temp", "open_work_orders")]
    assert ranks == [1.0, 1 - 2 / 3, 0.0]
    scatter = Pick("scatter_plot", ("chiller_2_kw", "outdoor_air_temp"), "")
    assert offered_competitor_rank(scatter, Pick("scatter_plot", ("chiller_2_kw",), ""), shortlist) == 1.0  # one fewer
    assert offered_competitor_rank(scatter, Pick("scatter_plot", ("chiller_2_kw", "open_work_orders"), ""), shortlist) == 0.0


def test_offered_fixture_negatives_reject_the_competitor_the_shortlist_offers():
    shortlist = CATALOG.shortlist_for(SCENARIOS["s1"])
    offered_wrong = next(f for f in shortlist if f != "chiller_1_kw")
    not_offered = next(f.slug for f in CATALOG.fixtures if f.slug not in shortlist)
    entries = [entry("up", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
               entry("d1", "s1", "line_chart", (not_offered,), vote("down")),
               entry("d2", "s1", "line_chart", (offered_wrong,), vote("down")),
               entry("d3", "s1", "line_chart", ("chiller_1_kw", not_offered), vote("down"))]
    assert rejected_fixtures_by_seed(entries, offered_negatives=True) == [[offered_wrong]] * 6
    assert any(fixtures != [offered_wrong] for fixtures in rejected_fixtures_by_seed(entries))  # without the option the rejected pick is random
    both = build_fixture_dpo_pairs(entries, SCENARIOS, CATALOG, max_pairs_per_scenario=1, hard_negatives=True, offered_negatives=True)
    assert picks(both, "rejected")[0]["fixtures"][0] == "chiller_1_kw"  # departing latest comes first


def test_a_correction_is_chosen_over_the_entry_it_corrects():
    corrected = Pick("line_chart", ("chiller_1_kw",), "")
    entries = [entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("down", corrected=corrected))]
    rows = build_correction_pairs(entries, SCENARIOS, CATALOG)
    assert len(rows) == 1
    assert picks(rows, "chosen")[0]["widget"] == "line_chart"
    assert picks(rows, "rejected")[0]["widget"] == "kpi_card"
    assert rows[0]["origin"] == "correction" and rows[0]["kind"] == "widget"


def _slip_and_right_up_with_a_correction():
    # s1 asks for chiller 1's trend: the line chart is rightly up-rated, the gauge up-rated by a slip, and a down-rated
    # KPI card carries the rater's correction naming the line chart.
    right = Pick("line_chart", ("chiller_1_kw",), "")
    return [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
        entry("b", "s1", "gauge", ("chiller_1_kw",), vote("up")),
        entry("c", "s1", "kpi_card", ("chiller_1_kw",), vote("down", corrected=right)),
        entry("d", "s1", "table", ("chiller_1_kw",), vote("down")),
        entry("e", "s1", "line_chart", ("chiller_2_kw",), vote("down")),
    ]


def test_where_a_correction_names_the_right_pick_an_up_it_contradicts_is_never_chosen():
    entries = _slip_and_right_up_with_a_correction()
    rows = build_widget_dpo_pairs(entries, SCENARIOS, CATALOG, max_pairs_per_scenario=4, agree_with_corrections=True)
    assert {p["widget"] for p in picks(rows, "chosen")} == {"line_chart"}
    assert {p["widget"] for p in picks(rows, "rejected")} == {"kpi_card", "table"}
    without = build_widget_dpo_pairs(entries, SCENARIOS, CATALOG, max_pairs_per_scenario=4)
    assert "gauge" in {p["widget"] for p in picks(without, "chosen")}
    result = format_preferences(entries, SCENARIOS, CATALOG, chosen_agrees_with_corrections=True)
    assert "gauge" not in {p["widget"] for p in picks(result.pairs, "chosen")}
    assert result.stats.filtered["widget_up_contradicted_by_correction"] == 1


def test_ups_stay_chosen_where_no_correction_names_any_of_them():
    entries = _slip_and_right_up_with_a_correction()
    entries[2] = entry("c", "s1", "kpi_card", ("chiller_1_kw",), vote("down", corrected=Pick("heatmap", ("chiller_1_kw",), "")))
    rows = build_widget_dpo_pairs(entries, SCENARIOS, CATALOG, max_pairs_per_scenario=4, agree_with_corrections=True)
    assert {p["widget"] for p in picks(rows, "chosen")} == {"line_chart", "gauge"}
    entries[2] = entry("c", "s1", "kpi_card", ("chiller_1_kw",), vote("down"))
    rows = build_widget_dpo_pairs(entries, SCENARIOS, CATALOG, max_pairs_per_scenario=4, agree_with_corrections=True)
    assert {p["widget"] for p in picks(rows, "chosen")} == {"line_chart", "gauge"}


def test_conflicting_ratings_follow_the_majority_and_ties_are_dropped():
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up", "ann"), vote("up", "bob"), vote("down", "cat")),
        entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("up", "ann"), vote("down", "bob")),
    ]
    result = format_preferences(entries, SCENARIOS, CATALOG)
    verdicts = entry_verdicts(entries)
    assert verdicts == {"a": "up"}
    assert result.stats.conflicts_resolved == 1
    assert result.stats.filtered["conflict_tie"] == 1


def test_unpaired_ratings_become_kto_rows():
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
        entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("down")),
        entry("c", "s2", "table", ("open_work_orders",), vote("up")),
        entry("d", "s2", "table", ("chiller_2_kw",), vote("down")),
    ]
    result = format_preferences(entries, SCENARIOS, CATALOG, kind="widget")
    kto = {(r["scenario_id"], json.loads(r["completion"][0]["content"])["fixtures"][0], r["label"]) for r in result.kto_rows}
    # s1's picks are a widget pair; s2's up and down share a widget, so with widget pairs only they stay unpaired.
    assert kto == {("s2", "open_work_orders", True), ("s2", "chiller_2_kw", False)}
    assert set(result.kto_rows[0]) == {"prompt", "completion", "label", "scenario_id"}


def test_low_confidence_and_untrusted_ratings_are_left_out():
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up", tags=("low_confidence",))),
        entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("down", trusted=False)),
        entry("c", "s1", "gauge", ("chiller_1_kw",), vote("down")),
    ]
    result = format_preferences(entries, SCENARIOS, CATALOG)
    assert result.pairs == []
    assert result.stats.filtered["low_confidence"] == 1
    assert result.stats.filtered["untrusted_rater"] == 1


def test_exact_duplicate_pairs_are_dropped():
    corrected = Pick("line_chart", ("chiller_1_kw",), "title")
    entries = [
        entry("a", "s1", "line_chart", ("chiller_1_kw",), vote("up")),
        entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("down", corrected=corrected)),
    ]
    result = format_preferences(entries, SCENARIOS, CATALOG)
    assert len(result.pairs) == 1
    assert result.stats.filtered["duplicate_pair"] == 1


def test_a_pair_whose_chosen_equals_rejected_is_dropped():
    same = Pick("kpi_card", ("chiller_1_kw",), "other title")
    entries = [entry("b", "s1", "kpi_card", ("chiller_1_kw",), vote("down", corrected=same))]
    result = format_preferences(entries, SCENARIOS, CATALOG)
    assert result.pairs == []
    assert result.stats.filtered["chosen_equals_rejected"] == 1


def test_a_chosen_pick_the_prompt_does_not_offer_is_dropped():
    entries = [
        entry("a", "s2", "table", ("chiller_2_kw",), vote("up")),
        entry("b", "s2", "gauge", ("chiller_2_kw",), vote("down")),
    ]
    catalog = dataclasses.replace(CATALOG, shortlist_size=1)
    assert catalog.fixture_shortlist(SCENARIOS["s2"].query) == ["open_work_orders"]
    result = format_preferences(entries, SCENARIOS, catalog)
    assert result.pairs == []
    assert result.stats.filtered["chosen_outside_shortlist"] == 1


def test_untrusted_and_low_confidence_thumbs_make_no_kto_rows():
    thumbs = [("e1", "s1", "line_chart", ("chiller_1_kw",), "up"), ("e2", "s2", "table", ("open_work_orders",), "down"),
              ("e3", "s2", "kpi_card", ("open_work_orders",), "up"), ("e4", "s1", "gauge", ("chiller_1_kw",), "down"),
              ("e5", "s2", "gauge", ("open_work_orders",), "down")]
    unusable = [entry(e, s, w, f, vote(v, trusted=False) if i % 2 else vote(v, tags=("low_confidence",)))
                for i, (e, s, w, f, v) in enumerate(thumbs)]
    formatted = format_preferences(unusable, SCENARIOS, CATALOG, max_pairs_per_scenario=1)
    assert formatted.kto_rows == [] and formatted.pairs == []
    assert formatted.stats.filtered["untrusted_rater"] == 2 and formatted.stats.filtered["low_confidence"] == 3
    # The same thumbs from a trusted rater, untagged, do train: a row for the thumb no pair took.
    usable = format_preferences([entry(e, s, w, f, vote(v)) for e, s, w, f, v in thumbs], SCENARIOS, CATALOG, max_pairs_per_scenario=1)
    assert len(usable.pairs) == 2 and len(usable.kto_rows) == 1


def test_pairs_and_kto_rows_write_fixtures_in_the_prompt_s_shortlist_order():
    question = ScenarioText("outdoor air temperature against chiller power", "HQ")
    scenarios = {"s3": question, "s4": question}
    shortlist = CATALOG.shortlist_for(question)
    assert shortlist.index("outdoor_air_temp") < shortlist.index("chiller_1_kw")  # not slug order
    both = ("chiller_1_kw", "outdoor_air_temp")
    entries = [
        entry("a", "s3", "line_chart", both, vote("up")),
        entry("b", "s3", "kpi_card", both, vote("down")),
        entry("c", "s4", "table", both, vote("up")),  # nothing to pair it with: a KTO row
    ]
    formatted = format_preferences(entries, scenarios, CATALOG)
    assert picks(formatted.pairs, "chosen")[0]["fixtures"] == ["outdoor_air_temp", "chiller_1_kw"]
    assert picks(formatted.pairs, "rejected")[0]["fixtures"] == ["outdoor_air_temp", "chiller_1_kw"]
    assert [json.loads(row["completion"][0]["content"])["fixtures"] for row in formatted.kto_rows] == [
        ["outdoor_air_temp", "chiller_1_kw"]]


def test_an_answer_follows_the_retriever_when_its_first_fixture_is_the_shortlist_s_first():
    from rl.data.data_formatter import follows_retriever

    def answer(*fixtures):
        return json.dumps({"widget": "scatter_plot", "fixtures": list(fixtures), "title": ""})

    shortlist = ["a", "b", "c"]
    assert follows_retriever(answer("a"), shortlist) and follows_retriever(answer("a", "c"), shortlist)
    assert follows_retriever(answer("c", "a"), shortlist)  # written in the shortlist's order: a first
    assert not follows_retriever(answer("b"), shortlist) and not follows_retriever(answer("b", "c"), shortlist)
