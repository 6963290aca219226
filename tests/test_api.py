import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from feedback.models import Entry, Rating


@pytest.fixture
def entry(demo_db):
    return Entry.objects.order_by("external_id").first()


def test_reading_needs_a_signed_in_user(demo_db, api):
    for path in ("/api/widgets/", "/api/scenarios/", "/api/entries/", "/api/schema/"):
        assert APIClient().get(path).status_code == 401, path
    client = api
    widgets = client.get("/api/widgets/").json()
    assert widgets["count"] == 12
    assert client.get("/api/fixtures/").json()["count"] == len(demo_db[0].fixtures)
    scenario = client.get("/api/scenarios/").json()["results"][0]
    assert set(scenario) == {"id", "query", "site", "role", "time_range"}


def test_it_refuses_writes_from_anonymous_users(entry, rater):
    Rating.objects.create(entry=entry, rater=rater, value="down", notes="alice's own")
    before = list(Rating.objects.values_list("pk", "rater__username", "value", "notes", "updated_at"))
    for payload in ({"entry_id": entry.external_id, "rating": "up"}, {"entry_id": entry.external_id, "rating": "up", "rater": "alice"}):
        response = APIClient().post("/api/feedback/", payload, format="json")
        assert response.status_code in (401, 403)
    assert list(Rating.objects.values_list("pk", "rater__username", "value", "notes", "updated_at")) == before


def test_it_records_feedback_in_the_production_app_s_shape(api, entry, rater):
    response = api.post(
        "/api/feedback/",
        {"entry_id": entry.external_id, "rating": "down", "tags": ["wrong_widget"], "notes": "needs a trend"},
        format="json",
    )
    assert response.status_code == 201, response.content
    rating = Rating.objects.get(entry=entry, rater=rater)
    assert (rating.value, rating.tags, rating.notes) == ("down", ["wrong_widget"], "needs a trend")


def test_rating_again_updates_the_rating(api, entry, rater):
    api.post("/api/feedback/", {"entry_id": entry.external_id, "rating": "down"}, format="json")
    response = api.post("/api/feedback/", {"entry_id": entry.external_id, "rating": "up"}, format="json")
    assert response.status_code == 200
    assert list(Rating.objects.filter(entry=entry, rater=rater).values_list("value", flat=True)) == ["up"]


def test_it_accepts_token_auth(entry, rater):
    token = Token.objects.create(user=rater)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.post("/api/feedback/", {"entry_id": entry.external_id, "rating": "up"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"entry_id": "no-such-entry", "rating": "up"}, "entry_id"),
        ({"rating": "maybe"}, "rating"),
        ({"rating": "up", "notes": "x" * 1_000_000}, "notes"),
        ({"rating": "up", "tags": ["t" * 51]}, "tags"),
        ({"rating": "up", "tags": 5}, "tags"),
        ({"rating": "down", "corrected_widget": "hologram"}, "corrected_widget"),
        ({"rating": "down", "corrected_fixtures": ["hq_main_meter_kw"]}, "corrected_fixtures"),
        ({"rating": "up", "ratng": "down"}, "ratng"),
    ],
)
def test_bad_feedback_gets_a_400_naming_the_field_and_stores_nothing(api, entry, payload, field):
    payload = {"entry_id": entry.external_id, **payload}
    before = Rating.objects.count()
    response = api.post("/api/feedback/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert Rating.objects.count() == before


def test_it_lists_only_your_own_ratings(api, entry, rater):
    api.post("/api/ratings/", {"entry_id": entry.external_id, "rating": "up"}, format="json")
    mine = api.get("/api/ratings/").json()
    assert mine["count"] == 1
    assert mine["results"][0]["rater"] == "alice"
    assert Rating.objects.exclude(rater=rater).exists()


def test_it_updates_your_rating_with_a_correction(api, entry, rater):
    rating_id = api.post("/api/ratings/", {"entry_id": entry.external_id, "rating": "up"}, format="json").json()["id"]
    response = api.put(
        f"/api/ratings/{rating_id}/",
        {"rating": "down", "corrected_widget": "line_chart", "corrected_fixtures": ["hq_main_meter_kw"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["corrected_fixtures"] == ["hq_main_meter_kw"]
    assert Rating.objects.get(pk=rating_id).corrected_widget.slug == "line_chart"


def test_the_production_app_creates_entries(production_app, demo_db):
    response = production_app.post(
        "/api/entries/",
        {"id": "prod-1", "scenario": "s001", "widget": "kpi_card", "fixtures": ["hq_main_meter_kw"], "raw_output": "{}",
         "source": "production", "model_version": "cc-widget-selector:base"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert Entry.objects.get(external_id="prod-1").fixture_slugs() == ["hq_main_meter_kw"]


def test_an_entry_with_an_unknown_fixture_is_refused(production_app, demo_db):
    response = production_app.post("/api/entries/", {"id": "prod-2", "scenario": "s001", "widget": "kpi_card", "fixtures": ["nope"]}, format="json")
    assert response.status_code == 400
    assert "fixtures" in response.json()
    assert not Entry.objects.filter(external_id="prod-2").exists()


def test_it_serves_an_openapi_schema(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/feedback/" in schema["paths"]
    assert "/api/ratings/{id}/" in schema["paths"]


@pytest.mark.parametrize("patch", [{"rating": "sideways"}, {"tags": "x" * 60}, {"corrected_widget": "hologram"}, {"entry_id": "elsewhere"}])
def test_a_bad_patch_leaves_the_rating_as_it_was(api, entry, rater, patch):
    rating = Rating.objects.create(entry=entry, rater=rater, value="down", tags=["wrong_widget"], notes="kept")

    def stored():
        rating.refresh_from_db()
        return rating.value, rating.tags, rating.notes, rating.corrected_widget_id, list(rating.corrected_fixtures.all()), rating.updated_at

    before = stored()
    response = api.patch(f"/api/ratings/{rating.pk}/", patch, format="json")
    assert response.status_code == 400
    assert stored() == before
