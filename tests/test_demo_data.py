from collections import Counter

from feedback.demo import SIMULATED_RATER, build_demo


def test_it_builds_a_realistic_catalog_and_enough_scenarios():
    data, ratings = build_demo()
    assert len(data.widgets) >= 10
    assert len(data.fixtures) >= 30
    assert len(data.scenarios) >= 80
    assert all(w.description and f.description for w, f in zip(data.widgets, data.fixtures))
    assert len({s.query for s in data.scenarios}) == len(data.scenarios)


def test_it_gives_every_scenario_every_widget_variant():
    data, _ = build_demo(scenario_count=20)
    widgets_by_scenario = {}
    for entry in data.entries:
        widgets_by_scenario.setdefault(entry.scenario_id, set()).add(entry.widget)
    assert all(len(widgets) == len(data.widgets) for widgets in widgets_by_scenario.values())


def test_it_is_deterministic_for_a_seed():
    assert build_demo(seed=11) == build_demo(seed=11)
    assert build_demo(seed=11) != build_demo(seed=12)


def test_the_simulated_rater_mostly_prefers_the_pick_that_answers_the_question():
    data, ratings = build_demo(noise=0.0)
    ups = [r for r in ratings.ratings if r.rater == SIMULATED_RATER and r.rating == "up"]
    assert Counter(r.entry_id.split("-")[0] for r in ups).most_common(1)[0][1] == 1
    assert len(ups) == len(data.scenarios)
    assert {r.username for r in ratings.raters if r.simulated} >= {SIMULATED_RATER}
