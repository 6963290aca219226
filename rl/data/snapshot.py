"""A feedback source (the database or import files) read at one time: the catalogs, the scenarios and the rated entries."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rl.core.prompts import Catalog, CatalogItem, Pick, ScenarioText
from rl.data.data_formatter import RatedEntry, Vote


class DatasetError(ValueError):
    """The data cannot make a training set (bad source, too few pairs); the message says what to do."""


@dataclass(frozen=True)
class FeedbackSnapshot:
    """Everything the formatter needs, read from one source at one time."""

    catalog: Catalog
    scenarios: dict[str, ScenarioText]
    entries: list[RatedEntry]
    newest_rating_at: datetime | None


def catalog_from_rows(widgets: list[tuple[str, str, str]], fixtures: list[tuple[str, str, str, list[str]]]) -> Catalog:
    return Catalog(
        widgets=tuple(CatalogItem(*w) for w in sorted(widgets)),
        fixtures=tuple(CatalogItem(slug, name, description, tuple(sites or ())) for slug, name, description, sites in sorted(fixtures)),
    )


def catalog_rows_from_db() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, list[str]]]]:
    from feedback.models import Fixture, Widget

    return (list(Widget.objects.values_list("slug", "name", "description")),
            list(Fixture.objects.values_list("slug", "name", "description", "sites")))


def catalog_from_db() -> Catalog:
    """The widget and fixture catalogs as the database has them now."""
    return catalog_from_rows(*catalog_rows_from_db())


def load_snapshot_from_db(rater: str | None = None, until: datetime | None = None) -> FeedbackSnapshot:
    from django.db.models import Max, Prefetch

    from feedback.models import Entry, Fixture, RaterProfile, Rating, Scenario

    ratings = Rating.objects.select_related("rater", "corrected_widget").prefetch_related(
        Prefetch("corrected_fixtures", queryset=Fixture.objects.only("slug"))
    )
    if rater is not None:
        ratings = ratings.filter(rater__username=rater)
    if until is not None:
        ratings = ratings.filter(updated_at__lte=until)
    untrusted = set(RaterProfile.objects.filter(trusted=False).values_list("user__username", flat=True))
    entries = (
        Entry.objects.filter(id__in=ratings.values("entry_id")).select_related("widget", "scenario")
        .prefetch_related(Prefetch("fixtures", queryset=Fixture.objects.only("slug")), Prefetch("ratings", queryset=ratings))
    )
    rated = []
    for entry in entries:
        votes = tuple(
            Vote(
                rater=r.rater.username, value=r.value, created_at=r.created_at, updated_at=r.updated_at, tags=tuple(r.tags),
                trusted=r.rater.username not in untrusted,
                corrected=Pick(r.corrected_widget.slug, tuple(f.slug for f in r.corrected_fixtures.all()), "") if r.corrected_widget else None,
            )
            for r in entry.ratings.all()
        )
        rated.append(RatedEntry(entry.external_id, entry.scenario.external_id, Pick(entry.widget.slug, tuple(entry.fixture_slugs()), entry.title), votes))
    scenarios = {s.external_id: ScenarioText(s.query, s.site, s.role, s.time_range) for s in Scenario.objects.all()}
    return FeedbackSnapshot(
        catalog=catalog_from_db(),
        scenarios=scenarios,
        entries=sorted(rated, key=lambda e: e.entry_id),
        newest_rating_at=ratings.aggregate(newest=Max("updated_at"))["newest"],
    )


def load_snapshot_from_files(data_path: str | Path, ratings_path: str | Path, rater: str | None = None) -> FeedbackSnapshot:
    from feedback.files import FeedbackFileError, check_references, read_data_file, read_ratings_file

    try:
        data, ratings = read_data_file(data_path), read_ratings_file(ratings_path)
        check_references(data, ratings, data_path=data_path, ratings_path=ratings_path)
    except FeedbackFileError as exc:
        raise DatasetError(str(exc)) from exc
    untrusted = {r.username for r in ratings.raters if not r.trusted}
    votes: dict[str, list[Vote]] = {}
    for r in ratings.ratings:
        if rater is not None and r.rater != rater:
            continue
        corrected = Pick(r.corrected_widget, tuple(r.corrected_fixtures), "") if r.corrected_widget else None
        votes.setdefault(r.entry_id, []).append(
            Vote(rater=r.rater, value=r.rating, created_at=r.created_at, tags=tuple(r.tags), trusted=r.rater not in untrusted, corrected=corrected)
        )
    entries = [
        RatedEntry(e.id, e.scenario_id, Pick(e.widget, tuple(e.fixtures), e.title), tuple(sorted(votes[e.id], key=lambda v: v.rater)))
        for e in data.entries if e.id in votes
    ]
    used = [r.created_at for r in ratings.ratings if rater is None or r.rater == rater]
    return FeedbackSnapshot(
        catalog=catalog_from_rows([(w.slug, w.name, w.description) for w in data.widgets], [(f.slug, f.name, f.description, f.sites) for f in data.fixtures]),
        scenarios={s.id: ScenarioText(s.query, s.site, s.role, s.time_range) for s in data.scenarios},
        entries=sorted(entries, key=lambda e: e.entry_id),
        newest_rating_at=max(used) if used else None,
    )


def load_snapshot(source: str, data_path: str | Path | None = None, ratings_path: str | Path | None = None,
                  rater: str | None = None, until: datetime | str | None = None) -> FeedbackSnapshot:
    """The feedback of one source, `db` or `file`; with `until`, only database ratings last updated up to then."""
    if source == "file":
        if not data_path or not ratings_path:
            raise DatasetError("source 'file' needs both a data file and a ratings file (--data-file, --ratings-file).")
        return load_snapshot_from_files(data_path, ratings_path, rater)
    return load_snapshot_from_db(rater, datetime.fromisoformat(until) if isinstance(until, str) else until)
