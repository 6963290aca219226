"""Serving picks, each test against both APIs (the `serving_engine` fixture): Ollama's /api/chat, where the SIMULATED
Ollama runs the real SmolLM2 GGUF through llama.cpp with the answer schema as a grammar, and the OpenAI chat-completions
API of the REAL llama.cpp server (llama-cpp-python's) on the same GGUF."""
import json

import pytest
from django.contrib.auth import get_user_model

from feedback.models import Entry, Scenario
from rl.core.config import ConfigError, serving_config
from rl.core.prompts import ScenarioText, answer_schema, build_messages
from rl.serving.errors import EngineDown, EngineRefused, EngineTimeout, NoLiveModel, UnusableAnswer
from rl.serving.picks import CANDIDATE, LIVE, current_catalog, pick_widget, route
from tests.conftest import closed_port_url


def new_question(query: str = "how warm is it in the server room right now?") -> Scenario:
    return Scenario(query=query, site=Scenario.objects.order_by("external_id").first().site, role="operator", time_range="now")


def counts() -> tuple[int, int]:
    return Entry.objects.count(), Scenario.objects.count()


def test_pick_widget_asks_the_live_version_under_the_answer_schema_and_stores_its_entry(served_on, serving_engine):
    live, _candidate = served_on
    question = new_question()
    entries, scenarios = counts()
    served = pick_widget(question)
    entry = Entry.objects.get(external_id=served.entry.external_id)
    assert counts() == (entries + 1, scenarios + 1)
    assert entry.model_version == live.ollama_name == served.model_version and served.arm == LIVE
    assert entry.source == Entry.Source.PRODUCTION and entry.raw_output == served.raw_output
    assert entry.widget.slug == served.pick.widget and sorted(entry.fixture_slugs()) == sorted(served.pick.fixtures)
    sent = serving_engine.requests[-1]
    text = ScenarioText(question.query, question.site, question.role, question.time_range)
    assert sent["model"] == live.ollama_name
    assert sent["schema"] == answer_schema(text, current_catalog())
    assert build_messages(text, current_catalog())[1]["content"] in sent["text"]
    assert set(served.pick.fixtures) <= set(current_catalog().shortlist_for(text))
    if serving_engine.api == "openai":  # the engine reports log-probs: the widget's probability is stored
        assert entry.confidence is not None and 0 < entry.confidence <= 1
    else:
        assert entry.confidence is None


def test_route_sends_about_the_configured_share_to_the_candidate_and_always_the_same_way():
    keys = [f"request-{i}" for i in range(4000)]
    for share in (0.1, 0.5):
        routed = [route(key, share) for key in keys]
        assert abs(routed.count(CANDIDATE) / len(keys) - share) < 0.025
        assert routed == [route(key, share) for key in keys]
    assert {route(key, 0.0) for key in keys} == {LIVE}


def test_a_b_serving_asks_the_routed_version_and_stores_which_one_answered(served_on, serving_engine, settings):
    live, candidate = served_on
    assert live.ollama_name != candidate.ollama_name
    settings.RL_SERVING = {**settings.RL_SERVING, "ab_candidate": candidate.ollama_name, "ab_share": 0.5}
    keys = [f"operator-{i}" for i in range(40)]
    to_candidate = [k for k in keys if route(k, 0.5) == CANDIDATE][:2]
    to_live = [k for k in keys if route(k, 0.5) == LIVE][:2]
    for key in to_candidate + to_live:
        asked_before = len(serving_engine.requests)
        served = pick_widget(new_question(), request_key=key)
        expected = candidate if key in to_candidate else live
        assert [sent["model"] for sent in serving_engine.requests[asked_before:]] == [expected.ollama_name]  # the engine was asked this one
        assert served.model_version == expected.ollama_name
        assert served.arm == (CANDIDATE if key in to_candidate else LIVE)
        assert Entry.objects.get(external_id=served.entry.external_id).model_version == expected.ollama_name


def test_serving_settings_are_checked():
    with pytest.raises(ConfigError, match="ab_candidate"):
        serving_config(ab_share=0.2)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        serving_config(ab_share=1.5, ab_candidate="x:y")
    with pytest.raises(ConfigError, match="engine must be one of ollama, llama_cpp, vllm"):
        serving_config(engine="tgi")
    assert (serving_config(engine="llama_cpp").openai_schema_format, serving_config(engine="vllm").openai_schema_format) == (
        "json_object", "json_schema")


def test_the_engine_down_stores_nothing(served_on, serving_engine, settings):
    setattr(settings, serving_engine.url_setting(), closed_port_url())
    before = counts()
    with pytest.raises(EngineDown, match="unreachable"):
        pick_widget(new_question())
    assert counts() == before


def slow_engine(serving_engine, settings) -> str:
    """Make the engine answer after the serving timeout; returns the timeout as the error message words it. The real
    server cannot be slowed down, so against it the timeout is shorter than any answer it gives."""
    if serving_engine.api == "ollama":
        settings.RL_SERVING = {**settings.RL_SERVING, "timeout_seconds": 0.3}
        serving_engine.simulated_ollama.chat_delay_seconds = 1.5
        return "0.3 s"
    settings.RL_SERVING = {**settings.RL_SERVING, "timeout_seconds": 0.001}
    return "0.001 s"


def test_a_timeout_stores_nothing(served_on, serving_engine, settings):
    words = slow_engine(serving_engine, settings)
    before = counts()
    with pytest.raises(EngineTimeout, match=f"did not answer within {words}"):
        pick_widget(new_question())
    assert counts() == before


def test_an_answer_that_is_not_a_pick_stores_nothing(served_on, serving_engine, settings):
    settings.RL_SERVING = {**settings.RL_SERVING, "max_tokens": 16}  # the answer is cut off mid-JSON
    before = counts()
    with pytest.raises(UnusableAnswer, match="not a pick"):
        pick_widget(new_question())
    assert counts() == before


def test_a_version_the_engine_does_not_serve_is_refused_and_nothing_stored(served_on, serving_engine):
    from rl.models import ModelVersion

    ModelVersion.objects.filter(pk=served_on[0].pk).update(tag="never-registered")
    before = counts()
    with pytest.raises(EngineRefused, match="never-registered"):
        pick_widget(new_question())
    assert counts() == before


def test_no_live_model_is_a_clear_error(served_on):
    live, _ = served_on
    live.status = "registered"
    live.save()
    with pytest.raises(NoLiveModel, match="activate_model"):
        pick_widget(new_question())


def test_the_picks_endpoint_returns_the_pick_and_the_entry_feedback_refers_to(served_on, serving_engine, production_app):
    response = production_app.post("/api/picks/", {"query": "is AHU-2 running?", "site": "", "scenario_id": "cc-q-1", "request_id": "r1"},
                                   format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    entry = Entry.objects.get(external_id=body["entry_id"])
    assert body["scenario_id"] == "cc-q-1" == entry.scenario.external_id
    assert (body["widget"], body["fixtures"], body["model_version"], body["arm"], body["confidence"]) == (
        entry.widget.slug, entry.fixture_slugs(), served_on[0].ollama_name, "live", entry.confidence)
    feedback = production_app.post("/api/feedback/", {"entry_id": body["entry_id"], "rating": "up"}, format="json")
    assert feedback.status_code == 201


@pytest.mark.parametrize("break_it, status, code", [
    ("down", 503, "engine_unavailable"), ("slow", 504, "engine_timeout"), ("garbage", 502, "unparseable_answer"), ("unknown", 502, "engine_error"),
])
def test_the_picks_endpoint_reports_each_failure_and_stores_nothing(served_on, serving_engine, production_app, settings,
                                                                   break_it, status, code):
    from rl.models import ModelVersion

    if break_it == "down":
        setattr(settings, serving_engine.url_setting(), closed_port_url())
    elif break_it == "slow":
        slow_engine(serving_engine, settings)
    elif break_it == "garbage":
        settings.RL_SERVING = {**settings.RL_SERVING, "max_tokens": 16}
    else:
        ModelVersion.objects.filter(pk=served_on[0].pk).update(tag="never-registered")
    before = counts()
    response = production_app.post("/api/picks/", {"query": "is AHU-2 running?"}, format="json")
    assert response.status_code == status and response.json()["error"] == code and response.json()["detail"]
    assert counts() == before


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
    with pytest.raises(CommandError, match="engine_unavailable"):
        call_command("pick_widget", "which chiller is using the most power?")
    assert counts() == before
