"""One rule for a usable rating (a trusted rater's, not tagged low_confidence), applied alike by the selector the
online learner's buffer and the served up-rates read, and by the data formatter that makes training pairs."""
import pytest
from django.contrib.auth import get_user_model

from feedback.models import Entry, RaterProfile, Rating
from feedback.selectors import usable_ratings
from feedback.validation import rating_is_usable
from rl.data.data_formatter import Vote


@pytest.mark.parametrize(("trusted", "tags", "usable"), [
    (True, [], True), (True, ["good", "wrong_widget"], True), (True, ["low_confidence"], False), (False, [], False),
    (False, ["low_confidence"], False), (True, None, True),
])
def test_the_rule_and_the_formatter_s_votes_agree(trusted, tags, usable):
    assert rating_is_usable(trusted=trusted, tags=tags) is usable
    vote = Vote(rater="r", value="up", created_at=None, tags=tuple(tags or ()), trusted=trusted)
    assert vote.usable is usable


def test_the_selector_keeps_exactly_the_usable_ratings(demo_db):
    users = get_user_model().objects
    trusted, untrusted, no_profile = users.create_user("u-trusted"), users.create_user("u-untrusted"), users.create_user("u-plain")
    RaterProfile.objects.update_or_create(user=trusted, defaults={"trusted": True})
    RaterProfile.objects.update_or_create(user=untrusted, defaults={"trusted": False})
    RaterProfile.objects.filter(user=no_profile).delete()
    entries = list(Entry.objects.order_by("external_id")[:3])
    Rating.objects.all().delete()
    kept = [Rating.objects.create(entry=entries[0], rater=trusted, value="up", tags=["good"]),
            Rating.objects.create(entry=entries[0], rater=no_profile, value="down")]
    Rating.objects.create(entry=entries[1], rater=trusted, value="up", tags=["low_confidence"])
    Rating.objects.create(entry=entries[2], rater=untrusted, value="up")
    assert sorted(usable_ratings().values_list("pk", flat=True)) == sorted(r.pk for r in kept)
    # of a narrower queryset, the same rule
    assert list(usable_ratings(Rating.objects.filter(entry=entries[1])).values_list("pk", flat=True)) == []
