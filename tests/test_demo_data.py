from collections import Counter

from feedback.demo import PHRASINGS, SIMULATED_RATER, build_demo


def test_it_builds_a_realistic_catalog_and_enough_scenarios():
    data, ratings = build_demo()
    assert len(data.widgets) >= 10
    assert len(data.fixtures) >= 30
    assert len(data.scenarios) >= 400
    assert all(w.description and f.description for w, f in zip(data.widgets, data.fixtures))
    assert len({s.query for s in data.scenarios}) == len(data.scenarios)


def test_no_widget_is_right_for_more_than_a_twelfth_of_the_scenarios():
    data, ratings = build_demo(noise=0.0)  # the truth: without the rater's noise, each up-vote is the right pick
    ups = {r.entry_id for r in ratings.ratings if r.rater == SIMULATED_RATER and r.rating == "up"}
    right = Counter(e.widget for e in data.entries if e.id in ups)
    assert set(right) == {w.slug for w in data.widgets} and sum(right.values()) == len(data.scenarios)
    assert max(right.values()) * 12 <= sum(right.values())


def test_every_widget_is_asked_for_in_at_least_21_ways():
    assert set(PHRASINGS) == {w.slug for w in build_demo(scenario_count=12)[0].widgets}
    assert all(len(set(phrasings)) >= 21 for phrasings in PHRASINGS.values())


def test_sites_have_different_catalogs_so_slugs_cannot_be_memorized():
    data, _ = build_demo()
    sites = {s.site for s in data.scenarios}
    assert len(sites) >= 3
    by_site = {site: {f.slug for f in data.fixtures if site in f.sites} for site in sites}
    assert all(by_site.values())
    assert not set.intersection(*by_site.values())
    fixture_sites = {f.slug: set(f.sites) for f in data.fixtures}
    scenario_site = {s.id: s.site for s in data.scenarios}
    assert all(scenario_site[e.scenario_id] in fixture_sites[slug] for e in data.entries for slug in e.fixtures)


def test_it_gives_every_scenario_every_widget_variant():
    data, _ = build_demo(scenario_count=20)
    widgets_by_scenario = {}
    for entry in data.entries:
        widgets_by_scenario.setdefault(entry.scenario_id, set()).add(entry.widget)
    assert all(len(widgets) == len(data.widgets) for widgets in widgets_by_scenario.values())


def test_a_question_with_two_measurements_also_gets_picks_that_show_one_of_them_rated_down():
    data, ratings = build_demo(scenario_count=48, noise=0.0)
    verdict = {r.entry_id: r.rating for r in ratings.ratings if r.rater == SIMULATED_RATER}
    pairs = [s for s in data.scenarios if any(len(e.fixtures) == 2 for e in data.entries if e.scenario_id == s.id and verdict[e.id] == "up")]
    assert pairs
    for scenario in pairs:
        right = next(e for e in data.entries if e.scenario_id == scenario.id and verdict[e.id] == "up")
        parts = [e for e in data.entries if e.scenario_id == scenario.id and e.widget == right.widget and len(e.fixtures) == 1]
        assert sorted(f for e in parts for f in e.fixtures) == sorted(right.fixtures)
        assert all(verdict[e.id] == "down" for e in parts)


def test_it_is_deterministic_for_a_seed():
    assert build_demo(seed=11) == build_demo(seed=11)
    assert build_demo(seed=11) != build_demo(seed=12)


def test_the_simulated_rater_mostly_prefers_the_pick_that_answers_the_question():
    data, ratings = build_demo(noise=0.0)
    ups = [r for r in ratings.ratings if r.rater == SIMULATED_RATER and r.rating == "up"]
    assert Counter(r.entry_id.split("-")[0] for r in ups).most_common(1)[0][1] == 1
    assert len(ups) == len(data.scenarios)
    assert {r.username for r in ratings.raters if r.simulated} >= {SIMULATED_RATER}


def test_the_simulated_rater_up_votes_the_right_pick_and_down_votes_the_others():
    import random

    from feedback.demo import fresh_questions, simulated_verdict

    rng = random.Random(3)
    for question in fresh_questions(seed=9, count=60):
        right = (question.good_widgets[0], question.fixtures)
        wrong_widget = next(w for w in PHRASINGS if w not in question.good_widgets)
        wrong_fixtures = question.fixtures[:-1] if len(question.fixtures) > 1 else (*question.fixtures, "some_other_fixture")
        assert question.is_right(*right) and not question.is_right(wrong_widget, question.fixtures)
        assert simulated_verdict(question, *right, rng, noise=0.0).value == "up"
        assert simulated_verdict(question, wrong_widget, question.fixtures, rng, noise=0.0).value == "down"
        assert simulated_verdict(question, question.good_widgets[0], wrong_fixtures, rng, noise=0.0).value == "down"
    # with the demo's 5% noise, about one verdict in twenty is flipped
    flipped = sum(simulated_verdict(q, q.good_widgets[0], q.fixtures, rng).value == "down" for q in fresh_questions(seed=10, count=400))
    assert 5 <= flipped <= 40
