import pytest
from django.db import IntegrityError, transaction

from feedback.models import Entry, Rating


def test_it_allows_one_rating_per_entry_per_rater(demo_db, rater):
    entry = Entry.objects.first()
    Rating.objects.create(entry=entry, rater=rater, value="up")
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(entry=entry, rater=rater, value="down")
    assert Rating.objects.filter(entry=entry, rater=rater).count() == 1


def test_it_refuses_a_rating_that_is_neither_up_nor_down_in_the_database(demo_db, rater):
    entry = Entry.objects.first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(entry=entry, rater=rater, value="meh")
    assert not Rating.objects.filter(rater=rater).exists()


def test_it_keeps_each_entry_s_fixtures(demo_db):
    data, _ = demo_db
    first = data.entries[0]
    entry = Entry.objects.get(external_id=first.id)
    assert entry.fixture_slugs() == sorted(first.fixtures)
