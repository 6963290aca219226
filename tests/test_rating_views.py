"""The rating UI's server side (the browser test drives the same views through Chromium)."""
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
    assert f'data-entry="{first.external_id}"' in page and "Rated 0 of 180" in page
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
