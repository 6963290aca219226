import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from django.core.management import CommandError, call_command

from feedback.demo import build_demo
from feedback.files import FeedbackRatings, RatingRecord, write_json
from feedback.models import Entry, Rating, Scenario, Widget
from feedback.selectors import feedback_data_export, feedback_ratings_export


def _snapshot() -> tuple:
    ratings = sorted(
        (r.entry.external_id, r.rater.username, r.value, tuple(r.tags), r.notes, r.created_at,
         r.corrected_widget_id and r.corrected_widget.slug, tuple(sorted(f.slug for f in r.corrected_fixtures.all())))
        for r in Rating.objects.select_related("entry", "rater", "corrected_widget").prefetch_related("corrected_fixtures")
    )
    entries = sorted((e.external_id, e.scenario.external_id, e.widget.slug, tuple(e.fixture_slugs()), e.title)
                     for e in Entry.objects.select_related("scenario", "widget").prefetch_related("fixtures"))
    return entries, ratings


@pytest.fixture
def files(demo_paths):
    return demo_paths


def test_import_then_export_round_trips_into_an_empty_database(db, files, tmp_path):
    data_file, ratings_file = files
    call_command("import_feedback", data_file=str(data_file), ratings_file=str(ratings_file))
    before = _snapshot()
    call_command("export_feedback", data_file=str(tmp_path / "out-data.json"), ratings_file=str(tmp_path / "out-ratings.json"))
    Rating.objects.all().delete()
    Entry.objects.all().delete()
    Scenario.objects.all().delete()
    assert _snapshot() == ([], [])
    call_command("import_feedback", data_file=str(tmp_path / "out-data.json"), ratings_file=str(tmp_path / "out-ratings.json"))
    assert _snapshot() == before
    assert len(before[1]) == len(json.loads(ratings_file.read_text())["ratings"])


def test_importing_twice_changes_nothing(db, files, capsys):
    data_file, ratings_file = files
    call_command("import_feedback", data_file=str(data_file), ratings_file=str(ratings_file))
    before = _snapshot()
    updated_at = sorted(Rating.objects.values_list("id", "updated_at"))
    call_command("import_feedback", data_file=str(data_file), ratings_file=str(ratings_file))
    assert "nothing changed" in capsys.readouterr().out
    assert _snapshot() == before
    assert sorted(Rating.objects.values_list("id", "updated_at")) == updated_at


def test_a_changed_rating_in_the_file_updates_the_database(db, files, demo_files):
    data_file, ratings_file = files
    call_command("import_feedback", data_file=str(data_file), ratings_file=str(ratings_file))
    _, ratings = demo_files
    first = ratings.ratings[0]
    flipped = first.model_copy(update={"rating": "down" if first.rating == "up" else "up"})
    write_json(ratings_file, FeedbackRatings(raters=ratings.raters, ratings=[flipped, *ratings.ratings[1:]]))
    call_command("import_feedback", ratings_file=str(ratings_file))
    assert Rating.objects.get(entry__external_id=first.entry_id, rater__username=first.rater).value == flipped.rating


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["ratings"][5].update(rating="maybe"), "ratings[5].rating: must be 'up' or 'down'"),
        (lambda r: r["ratings"][2].update(entry_id="ghost"), "ratings[2].entry_id: unknown entry 'ghost'"),
        (lambda r: r["ratings"][7].update(notes="x" * 1_000_000), "ratings[7].notes: at most 5000 characters"),
        (lambda r: r["ratings"][1].pop("created_at"), "ratings[1].created_at: Field required"),
        (lambda r: r["ratings"][3].update(created_at="2026-01-01T10:00:00"), "ratings[3].created_at: must carry a timezone"),
        (lambda r: r["ratings"][4].update(colour="blue"), "ratings[4].colour: Extra inputs are not permitted"),
        (lambda r: r["ratings"][6].update(corrected_widget="hologram"), "ratings[6].corrected_widget: unknown widget"),
    ],
)
def test_a_malformed_ratings_file_changes_nothing_and_names_file_record_and_field(db, files, mutate, message):
    data_file, ratings_file = files
    call_command("import_feedback", data_file=str(data_file))
    raw = json.loads(ratings_file.read_text())
    mutate(raw)
    # The first records are valid: an import that wrote as it went would leave them behind.
    ratings_file.write_text(json.dumps(raw))
    with pytest.raises(CommandError) as error:
        call_command("import_feedback", ratings_file=str(ratings_file))
    assert str(ratings_file) in str(error.value)
    assert message in str(error.value)
    assert Rating.objects.count() == 0


def test_a_file_that_is_not_json_changes_nothing(db, files):
    data_file, ratings_file = files
    ratings_file.write_text('{"ratings": [ {"entry_id": ')
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("import_feedback", data_file=str(data_file), ratings_file=str(ratings_file))
    assert Widget.objects.count() == 0


def test_an_entry_with_an_unknown_widget_changes_nothing(db, files):
    data_file, _ = files
    raw = json.loads(data_file.read_text())
    raw["entries"][9]["widget"] = "hologram"
    data_file.write_text(json.dumps(raw))
    with pytest.raises(CommandError, match=r"entries\[9\].widget: unknown widget 'hologram'"):
        call_command("import_feedback", data_file=str(data_file))
    assert Widget.objects.count() == 0 and Entry.objects.count() == 0


def test_a_missing_file_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_feedback", ratings_file=str(tmp_path / "nope.json"))


def test_it_imports_ten_thousand_ratings_in_seconds(db, tmp_path):
    data, _ = build_demo(seed=5, scenario_count=40)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ratings = FeedbackRatings(ratings=[
        RatingRecord(entry_id=entry.id, rating="up" if i % 3 else "down", rater=f"rater-{i % 17}",
                     created_at=start + timedelta(seconds=i), tags=["bulk"])
        for i, entry in enumerate(data.entries * 17)
        if i < 10_000
    ])
    ratings = FeedbackRatings(ratings=list({(r.entry_id, r.rater): r for r in ratings.ratings}.values()))
    assert len(ratings.ratings) == 10_000
    write_json(tmp_path / "data.json", data)
    write_json(tmp_path / "ratings.json", ratings)
    began = time.perf_counter()
    call_command("import_feedback", data_file=str(tmp_path / "data.json"), ratings_file=str(tmp_path / "ratings.json"))
    elapsed = time.perf_counter() - began
    assert Rating.objects.count() == 10_000
    assert elapsed < 30, f"importing 10,000 ratings took {elapsed:.1f}s"


def test_export_writes_what_the_database_holds(demo_db):
    data, ratings = demo_db
    assert len(feedback_data_export().entries) == len(data.entries)
    assert len(feedback_ratings_export().ratings) == len(ratings.ratings)


def test_data_and_ratings_imported_together_with_one_bad_rating_leave_nothing_behind(db, files):
    from django.contrib.auth import get_user_model

    data_file, ratings_file = files
    raw = json.loads(ratings_file.read_text())
    # the last record names a widget neither file has: only the references across both files show it
    raw["ratings"][-1].update(rating="down", corrected_widget="hologram")
    ratings_file.write_text(json.dumps(raw))
    users = get_user_model().objects.count()
    with pytest.raises(CommandError, match="corrected_widget: unknown widget 'hologram'"):
        call_command("import_feedback", data_file=str(data_file), ratings_file=str(ratings_file))
    assert (Scenario.objects.count(), Entry.objects.count(), Widget.objects.count(), Rating.objects.count()) == (0, 0, 0, 0)
    assert get_user_model().objects.count() == users  # no rater accounts were made for the file's raters
