from collections import Counter

from feedback.demo import PHRASINGS, SIMULATED_RATER, build_demo


def test_it_builds_a_realistic_catalog_and_enough_scenarios():
    data, ratings = build_demo()
    assert len(data.widgets) >= 10
    assert len(data.fixtures) >= 30
    assert len(data.scenarios) >= 400
    assert all(w.description and f.description for w, f in zip(data.widgets, data.fixtures))
    assert len({s.query for s in data.scenarios}) == len(data.scenarios)


def test_no_widget_is_right_for_more_than_15_percent_of_scenarios():
    data, ratings = build_demo()
    ups = {r.entry_id for r in ratings.ratings if r.rater == SIMULATED_RATER and r.rating == "up"}
    right = Counter(e.widget for e in data.entries if "-alt" not in e.id and e.id in ups)
    assert set(right) == {w.slug for w in data.widgets}
    assert max(right.values()) / sum(right.values()) <= 0.15


def test_every_widget_is_asked_for_in_at_least_20_ways():
    assert set(PHRASINGS) == {w.slug for w in build_demo(scenario_count=12)[0].widgets}
    assert all(len(set(phrasings)) >= 20 for phrasings in PHRASINGS.values())


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


def test_it_is_deterministic_for_a_seed():
    assert build_demo(seed=11) == build_demo(seed=11)
    assert build_demo(seed=11) != build_demo(seed=12)


def test_the_simulated_rater_mostly_prefers_the_pick_that_answers_the_question():
    data, ratings = build_demo(noise=0.0)
    ups = [r for r in ratings.ratings if r.rater == SIMULATED_RATER and r.rating == "up"]
    assert Counter(r.entry_id.split("-")[0] for r in ups).most_common(1)[0][1] == 1
    assert len(ups) == len(data.scenarios)
    assert {r.username for r in ratings.raters if r.simulated} >= {SIMULATED_RATER}
