"""Serving picks through Ollama's /api/chat: the SIMULATED Ollama runs the real SmolLM2 GGUF through llama.cpp with
the answer schema as a grammar."""
import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from feedback.models import Entry, Scenario
from rl.core.config import ConfigError, serving_config
from rl.core.prompts import ScenarioText, answer_schema, build_messages
from rl.serving.picks import (
    CANDIDATE, LIVE, NoLiveModel, OllamaDown, OllamaTimeout, UnusableAnswer, current_catalog, pick_widget, route,
)
from tests.conftest import closed_port_url


def new_question(query: str = "how warm is it in the server room right now?") -> Scenario:
    return Scenario(query=query, site=Scenario.objects.order_by("external_id").first().site, role="operator", time_range="now")


def counts() -> tuple[int, int]:
    return Entry.objects.count(), Scenario.objects.count()


def test_pick_widget_asks_the_live_version_under_the_answer_schema_and_stores_its_entry(served_versions, simulated_ollama):
    live, _candidate = served_versions
    question = new_question()
    entries, scenarios = counts()
    served = pick_widget(question)
    entry = Entry.objects.get(external_id=served.entry.external_id)
    assert counts() == (entries + 1, scenarios + 1)
    assert entry.model_version == live.ollama_name == served.model_version and served.arm == LIVE
    assert entry.source == Entry.Source.PRODUCTION and entry.raw_output == served.raw_output
    assert entry.widget.slug == served.pick.widget and sorted(entry.fixture_slugs()) == sorted(served.pick.fixtures)
    chat = simulated_ollama.chats[-1]
    text = ScenarioText(question.query, question.site, question.role, question.time_range)
    assert chat["model"] == live.ollama_name
    assert chat["format"] == answer_schema(text, current_catalog())
    assert build_messages(text, current_catalog())[1]["content"] in chat["prompt"]
    assert set(served.pick.fixtures) <= set(current_catalog().shortlist_for(text))


def test_route_sends_about_the_configured_share_to_the_candidate_and_always_the_same_way():
    keys = [f"request-{i}" for i in range(4000)]
    for share in (0.1, 0.5):
        routed = [route(key, share) for key in keys]
        assert abs(routed.count(CANDIDATE) / len(keys) - share) < 0.025
        assert routed == [route(key, share) for key in keys]
    assert {route(key, 0.0) for key in keys} == {LIVE}


def test_a_b_serving_asks_the_routed_version_and_stores_which_one_answered(served_versions, simulated_ollama, settings):
    live, candidate = served_versions
    assert live.ollama_name != candidate.ollama_name
    settings.RL_SERVING = {"ab_candidate": candidate.ollama_name, "ab_share": 0.5}
    keys = [f"operator-{i}" for i in range(40)]
    to_candidate = [k for k in keys if route(k, 0.5) == CANDIDATE][:2]
    to_live = [k for k in keys if route(k, 0.5) == LIVE][:2]
    for key in to_candidate + to_live:
        asked_before = len(simulated_ollama.chats)
        served = pick_widget(new_question(), request_key=key)
        expected = candidate if key in to_candidate else live
        assert [chat["model"] for chat in simulated_ollama.chats[asked_before:]] == [expected.ollama_name]  # the engine was asked this one
        assert served.model_version == expected.ollama_name
        assert Entry.objects.get(external_id=served.entry.external_id).model_version == expected.ollama_name


def test_serving_settings_are_checked():
    with pytest.raises(ConfigError, match="ab_candidate"):
        serving_config(ab_share=0.2)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        serving_config(ab_share=1.5, ab_candidate="x:y")


def test_ollama_down_stores_nothing(served_versions, settings):
    settings.OLLAMA_HOST = closed_port_url()
    before = counts()
    with pytest.raises(OllamaDown, match="unreachable"):
        pick_widget(new_question())
    assert counts() == before


def test_a_timeout_stores_nothing(served_versions, simulated_ollama, settings):
    settings.RL_SERVING = {"timeout_seconds": 0.3}
    simulated_ollama.chat_delay_seconds = 1.5
    before = counts()
    with pytest.raises(OllamaTimeout, match="did not answer within 0.3 s"):
        pick_widget(new_question())
    assert counts() == before


def test_an_answer_that_is_not_a_pick_stores_nothing(served_versions, simulated_ollama):
    simulated_ollama.answer_override = lambda body: '{"widget": "hologram", "fixtures": []}'
    before = counts()
    with pytest.raises(UnusableAnswer, match="unknown_widget"):
        pick_widget(new_question())
    assert counts() == before


def test_no_live_model_is_a_clear_error(served_versions):
    live, _ = served_versions
    live.status = "registered"
    live.save()
    with pytest.raises(NoLiveModel, match="activate_model"):
        pick_widget(new_question())


def test_the_picks_endpoint_returns_the_pick_and_the_entry_feedback_refers_to(served_versions, production_app):
    response = production_app.post("/api/picks/", {"query": "is AHU-2 running?", "site": "", "scenario_id": "cc-q-1", "request_id": "r1"},
                                   format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    entry = Entry.objects.get(external_id=body["entry_id"])
    assert body["scenario_id"] == "cc-q-1" == entry.scenario.external_id
    assert (body["widget"], body["fixtures"], body["model_version"], body["arm"]) == (
        entry.widget.slug, entry.fixture_slugs(), served_versions[0].ollama_name, "live")
    feedback = production_app.post("/api/feedback/", {"entry_id": body["entry_id"], "rating": "up"}, format="json")
    assert feedback.status_code == 201


@pytest.mark.parametrize("break_it, status, code", [
    ("down", 503, "ollama_unavailable"), ("slow", 504, "ollama_timeout"), ("garbage", 502, "unparseable_answer"), ("unknown", 502, "ollama_error"),
])
def test_the_picks_endpoint_reports_each_failure_and_stores_nothing(served_versions, simulated_ollama, production_app, settings,
                                                                   break_it, status, code):
    if break_it == "down":
        settings.OLLAMA_HOST = closed_port_url()
    elif break_it == "slow":
        settings.RL_SERVING, simulated_ollama.chat_delay_seconds = {"timeout_seconds": 0.3}, 1.5
    elif break_it == "garbage":
        simulated_ollama.answer_override = lambda body: "I think a line chart would be nice."
    else:
        simulated_ollama.models.pop(served_versions[0].ollama_name)
    before = counts()
    response = production_app.post("/api/picks/", {"query": "is AHU-2 running?"}, format="json")
    assert response.status_code == status and response.json()["error"] == code and response.json()["detail"]
    assert counts() == before


def test_the_picks_endpoint_refuses_bad_input_and_accounts_without_the_permission(served_versions, production_app, api):
    assert production_app.post("/api/picks/", {"site": "x"}, format="json").status_code == 400
    assert production_app.post("/api/picks/", {"query": "x" * 2001}, format="json").status_code == 400
    existing = Scenario.objects.order_by("external_id").first()
    clash = production_app.post("/api/picks/", {"query": "another question", "scenario_id": existing.external_id}, format="json")
    assert clash.status_code == 400 and "scenario_id" in clash.json()
    assert api.post("/api/picks/", {"query": "is AHU-2 running?"}, format="json").status_code == 403
    assert APIClient().post("/api/picks/", {"query": "is AHU-2 running?"}, format="json").status_code in (401, 403)
    assert Entry.objects.filter(source=Entry.Source.PRODUCTION, model_version__startswith="cc-widget-selector").count() == 0


def test_the_simulated_ollama_refuses_malformed_chat_requests(served_versions, simulated_ollama):
    import httpx

    name = served_versions[0].ollama_name
    for body, status in [
        ({"model": "nope:x", "messages": []}, 404),
        ({"model": name, "messages": "hi"}, 400),
        ({"model": name, "messages": [{"role": "wizard", "content": "hi"}]}, 400),
        ({"model": name, "messages": [], "format": 5}, 400),
        ({"model": name, "messages": [], "options": {"temperature": "hot"}}, 400),
    ]:
        response = httpx.post(f"{simulated_ollama.url}/api/chat", content=json.dumps({**body, "stream": False}))
        assert response.status_code == status, body


# ----- A/B results -------------------------------------------------------------------------------------------------
def test_wilson_interval_matches_published_values():
    from rl.evaluation.ab_results import wilson_interval

    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and round(high, 4) == 0.1611
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_up_rates_count_usable_ratings_of_served_entries_per_version(served_versions, settings):
    from feedback.models import RaterProfile, Rating
    from rl.evaluation.ab_results import up_rate, up_rates

    live, candidate = served_versions
    settings.RL_SERVING = {"ab_candidate": candidate.ollama_name, "ab_share": 0.5}
    keys = [f"operator-{i}" for i in range(40)]
    served = {arm: [pick_widget(new_question(), request_key=k).entry for k in [k for k in keys if route(k, 0.5) == arm][:2]]
              for arm in (LIVE, CANDIDATE)}
    users = get_user_model().objects
    alice, bob, mallory = (users.create_user(name) for name in ("ab-alice", "ab-bob", "ab-mallory"))
    RaterProfile.objects.update_or_create(user=mallory, defaults={"trusted": False})
    for entry in served[LIVE]:
        Rating.objects.create(entry=entry, rater=alice, value="up")
        Rating.objects.create(entry=entry, rater=bob, value="up")
        Rating.objects.create(entry=entry, rater=mallory, value="down")  # untrusted: does not count
    Rating.objects.create(entry=served[CANDIDATE][0], rater=alice, value="down")
    Rating.objects.create(entry=served[CANDIDATE][1], rater=alice, value="up", tags=["low_confidence"])  # not usable
    rates = up_rates()
    assert (rates[live.ollama_name].ups, rates[live.ollama_name].n) == (4, 4)
    assert (rates[candidate.ollama_name].ups, rates[candidate.ollama_name].n) == (0, 1)
    assert str(up_rate(live.ollama_name)).startswith("100% of 4 (95% CI 51% to 100%)")
    assert up_rate("cc-widget-selector:never-served").n == 0


def test_the_admin_shows_each_version_s_served_up_rate(served_versions, admin_client):
    from feedback.models import Rating

    live, _ = served_versions
    entry = pick_widget(new_question()).entry
    Rating.objects.create(entry=entry, rater=get_user_model().objects.create_user("ab-carol"), value="up")
    page = admin_client.get("/admin/rl/modelversion/").content.decode()
    assert "Up-rate on served picks" in page and "100% of 1 (95% CI 21% to 100%)" in page and "no ratings yet" in page


def test_the_pick_widget_command_prints_the_pick_and_reports_errors(served_versions, settings, capsys):
    from django.core.management import CommandError, call_command

    call_command("pick_widget", "which chiller is using the most power?", "--site", "HQ Tower")
    printed = json.loads(capsys.readouterr().out)
    assert Entry.objects.get(external_id=printed["entry_id"]).widget.slug == printed["widget"]
    settings.OLLAMA_HOST = closed_port_url()
    before = counts()
    with pytest.raises(CommandError, match="ollama_unavailable"):
        call_command("pick_widget", "which chiller is using the most power?")
    assert counts() == before
