"""The rating UI's server side (the browser test drives the same views through Chromium)."""
import json

import pytest

from feedback.models import Entry, Rating


@pytest.fixture
def logged_in(client, rater, demo_db):
    client.force_login(rater)
    return client


def test_the_rating_page_needs_a_login(client, demo_db):
    response = client.get("/rate/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_rating_page_shows_the_next_unrated_entry_and_progress(logged_in, rater):
    first = Entry.objects.order_by("scenario__external_id", "external_id").first()
    page = logged_in.get("/rate/").content.decode()
    assert f'data-entry="{first.external_id}"' in page and f"Rated 0 of {Entry.objects.count()}" in page
    logged_in.post(f"/rate/entry/{first.external_id}/", {"rating": "up"})
    assert f'data-entry="{first.external_id}"' not in logged_in.get("/rate/").content.decode()


@pytest.mark.parametrize("form, message", [
    ({"rating": "maybe"}, "must be &#x27;up&#x27; or &#x27;down&#x27;"),
    ({"rating": "up", "notes": "x" * 1_000_000}, "at most 5000 characters"),
    ({"rating": "down", "corrected_widget": "hologram"}, "unknown widget"),
])
def test_bad_ratings_from_the_form_are_refused_and_nothing_is_stored(logged_in, rater, form, message):
    entry = Entry.objects.first()
    response = logged_in.post(f"/rate/entry/{entry.external_id}/", form)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Rating.objects.filter(rater=rater).exists()


def test_an_unknown_entry_is_a_404(logged_in):
    assert logged_in.post("/rate/entry/no-such-entry/", {"rating": "up"}).status_code == 404


def test_a_corrected_pick_from_the_form_becomes_a_correction_pair_from_the_database(logged_in, rater):
    from rl.data.data_formatter import format_preferences
    from rl.data.snapshot import load_snapshot_from_db

    entry = Entry.objects.exclude(widget__slug="line_chart").order_by("external_id").first()
    fixtures = list(entry.fixtures.values_list("slug", flat=True))
    response = logged_in.post(f"/rate/entry/{entry.external_id}/",
                              {"rating": "down", "corrected_widget": "line_chart", "corrected_fixtures": fixtures})
    assert response.status_code == 302
    snapshot = load_snapshot_from_db(rater=rater.username)
    pairs = format_preferences(snapshot.entries, snapshot.scenarios, snapshot.catalog).pairs
    corrections = [p for p in pairs if p["origin"] == "correction"]
    assert len(corrections) == 1 and corrections[0]["scenario_id"] == entry.scenario.external_id
    chosen, rejected = (json.loads(corrections[0][side][0]["content"]) for side in ("chosen", "rejected"))
    assert (chosen["widget"], sorted(chosen["fixtures"])) == ("line_chart", sorted(fixtures))
    assert (rejected["widget"], sorted(rejected["fixtures"])) == (entry.widget.slug, sorted(fixtures))


def test_with_the_setting_on_the_least_confident_picks_come_first_and_skip_follows_that_order(logged_in, settings):
    ordered = list(Entry.objects.order_by("scenario__external_id", "external_id"))
    unsure, middling, sure = ordered[-1], ordered[-2], ordered[-3]  # last in catalog order, so only the setting brings them forward
    for entry, confidence in ((unsure, 0.12), (middling, 0.5), (sure, 0.97)):
        Entry.objects.filter(pk=entry.pk).update(confidence=confidence)
    settings.RL_RATE_LEAST_CONFIDENT_FIRST = False
    assert f'data-entry="{ordered[0].external_id}"' in logged_in.get("/rate/").content.decode()
    settings.RL_RATE_LEAST_CONFIDENT_FIRST = True
    assert f'data-entry="{unsure.external_id}"' in logged_in.get("/rate/").content.decode()
    visited = [unsure.external_id]
    for _ in range(3):
        response = logged_in.post(f"/rate/entry/{visited[-1]}/skip/")
        visited.append(response["Location"].rstrip("/").rsplit("/", 1)[-1])
    # then the picks without a confidence, in catalog order
    assert visited == [unsure.external_id, middling.external_id, sure.external_id, ordered[0].external_id]
