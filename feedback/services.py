"""Writes to the feedback domain: rating an entry, recording a pick, importing files."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone

from feedback.files import FeedbackData, FeedbackRatings, check_references
from feedback.metrics import RATINGS_STORED
from feedback.models import Entry, Fixture, RaterProfile, Rating, Scenario, Widget
from feedback.validation import FeedbackValidationError, RatingInput, clean_rating

logger = logging.getLogger(__name__)

FEEDBACK_FIELDS = ("entry_id", "rating", "tags", "notes", "corrected_widget", "corrected_fixtures")


def _resolve_correction(rating_input: RatingInput) -> tuple[Widget | None, list[Fixture]]:
    if rating_input.corrected_widget is None:
        return None, []
    try:
        widget = Widget.objects.get(slug=rating_input.corrected_widget)
    except Widget.DoesNotExist:
        raise FeedbackValidationError("corrected_widget", f"unknown widget {rating_input.corrected_widget!r}") from None
    fixtures = list(Fixture.objects.filter(slug__in=rating_input.corrected_fixtures))
    missing = set(rating_input.corrected_fixtures) - {f.slug for f in fixtures}
    if missing:
        raise FeedbackValidationError("corrected_fixtures", f"unknown fixtures {sorted(missing)}")
    return widget, fixtures


def rating_submit(*, entry: Entry, rater: AbstractBaseUser, rating_input: RatingInput) -> tuple[Rating, bool]:
    """Record `rater`'s verdict on `entry`; a second verdict by the same rater replaces the first.

    Returns the rating and whether it was created (False: updated). Two statements for a rating without corrections:
    a read of the rater's earlier verdict and one upsert (INSERT ... ON CONFLICT DO UPDATE, so two verdicts racing on
    one entry cannot fail on the unique constraint).
    """
    corrected_widget, corrected_fixtures = _resolve_correction(rating_input)  # checked before anything is written
    verdict = {"value": rating_input.value, "tags": rating_input.tags, "notes": rating_input.notes, "corrected_widget": corrected_widget}
    # No savepoint: nothing inside is worth rolling back to; a failure fails the caller's transaction with it.
    with transaction.atomic(savepoint=False):
        earlier = Rating.objects.filter(entry=entry, rater=rater).only("id", "created_at").first()
        rating = Rating(entry=entry, rater=rater, **verdict)
        Rating.objects.bulk_create([rating], update_conflicts=True, unique_fields=["entry", "rater"], update_fields=[*verdict, "updated_at"])
        if earlier is not None:
            rating.pk, rating.created_at = earlier.pk, earlier.created_at
        if corrected_fixtures or earlier is not None:
            rating.corrected_fixtures.set(corrected_fixtures)
        transaction.on_commit(RATINGS_STORED.labels(value=rating.value).inc)
    return rating, earlier is None


@transaction.atomic
def feedback_submit(*, rater: AbstractBaseUser, feedback: Mapping[str, Any]) -> tuple[Rating, bool]:
    """A verdict in the production app's shape (`{entry_id, rating, tags, notes, corrected_widget, corrected_fixtures}`),
    as `POST /api/feedback/` and the online learner's `add_feedback` send it. Bad input raises FeedbackValidationError
    naming the field, and stores nothing."""
    if not isinstance(feedback, Mapping):
        raise FeedbackValidationError("feedback", f"must be a mapping with {', '.join(FEEDBACK_FIELDS[:4])}, got {type(feedback).__name__}")
    unknown = sorted(set(feedback) - set(FEEDBACK_FIELDS))
    if unknown:
        raise FeedbackValidationError(unknown[0], f"unknown field; expected some of {', '.join(FEEDBACK_FIELDS)}")
    entry_id = feedback.get("entry_id")
    if not isinstance(entry_id, str) or not entry_id:
        raise FeedbackValidationError("entry_id", f"must be an entry's id, got {entry_id!r}")
    entry = Entry.objects.filter(external_id=entry_id).first()
    if entry is None:
        raise FeedbackValidationError("entry_id", f"no entry with id {entry_id!r}")
    rating_input = clean_rating(feedback.get("rating"), feedback.get("tags"), feedback.get("notes"),
                                feedback.get("corrected_widget"), feedback.get("corrected_fixtures"))
    return rating_submit(entry=entry, rater=rater, rating_input=rating_input)


@transaction.atomic
def entry_create(
    *,
    external_id: str,
    scenario: Scenario,
    widget: Widget,
    fixtures: Iterable[Fixture],
    title: str = "",
    raw_output: str = "",
    source: str = Entry.Source.PRODUCTION,
    model_version: str = "",
    confidence: float | None = None,
) -> Entry:
    entry = Entry.objects.create(
        external_id=external_id, scenario=scenario, widget=widget, title=title,
        raw_output=raw_output, source=source, model_version=model_version, confidence=confidence,
    )
    entry.fixtures.set(list(fixtures))
    return entry


@dataclass
class ImportReport:
    """How many records an import created, changed and found already as they were, by kind."""

    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, created: int, updated: int, unchanged: int) -> None:
        self.created[kind] = created
        self.updated[kind] = updated
        self.unchanged[kind] = unchanged

    @property
    def changed_anything(self) -> bool:
        return any(self.created.values()) or any(self.updated.values())

    def lines(self) -> list[str]:
        return [
            f"{kind:<10} created {self.created[kind]:>6}  updated {self.updated[kind]:>6}  unchanged {self.unchanged[kind]:>6}"
            for kind in self.created
        ]


def _upsert(
    model: type[models.Model], key: str, wanted: dict[Any, dict[str, Any]]
) -> tuple[dict[Any, models.Model], set[Any], set[Any]]:
    """Create the rows of `wanted` (key value -> field values) that are missing and update those that differ.

    Returns all wanted rows by key, and the keys created and updated.
    """
    existing = {getattr(obj, key): obj for obj in model.objects.filter(**{f"{key}__in": list(wanted)})}
    to_create, to_update, changed_fields = [], [], set()
    for key_value, values in wanted.items():
        obj = existing.get(key_value)
        if obj is None:
            to_create.append(model(**{key: key_value}, **values))
            continue
        diff = {name for name, value in values.items() if getattr(obj, name) != value}
        if diff:
            for name in diff:
                setattr(obj, name, values[name])
            changed_fields |= diff
            to_update.append(obj)
    model.objects.bulk_create(to_create, batch_size=500)
    if to_update:
        model.objects.bulk_update(to_update, sorted(changed_fields), batch_size=500)
    rows = {getattr(obj, key): obj for obj in model.objects.filter(**{f"{key}__in": list(wanted)})}
    return rows, {getattr(obj, key) for obj in to_create}, {getattr(obj, key) for obj in to_update}


def _sync_m2m(through: type[models.Model], owner_field: str, target_field: str, wanted: dict[int, set[int]]) -> set[int]:
    """Make the links of each owner exactly `wanted[owner]`; returns the owners whose links changed."""
    current: dict[int, set[int]] = {owner: set() for owner in wanted}
    for owner, target in through.objects.filter(**{f"{owner_field}__in": list(wanted)}).values_list(owner_field, target_field):
        current[owner].add(target)
    to_add, changed = [], set()
    for owner, targets in wanted.items():
        extra = current[owner] - targets
        if extra:
            through.objects.filter(**{owner_field: owner, f"{target_field}__in": extra}).delete()
            changed.add(owner)
        for target in targets - current[owner]:
            to_add.append(through(**{owner_field: owner, target_field: target}))
            changed.add(owner)
    through.objects.bulk_create(to_add, batch_size=1000)
    return changed


def _count(report: ImportReport, kind: str, total: int, created: set[Any], updated: set[Any]) -> None:
    report.add(kind, len(created), len(updated), total - len(created) - len(updated))


@transaction.atomic
def feedback_import(
    data: FeedbackData | None, ratings: FeedbackRatings | None, *, data_path: str = "<data>", ratings_path: str = "<ratings>"
) -> ImportReport:
    """Bring files into the database: all or nothing, and importing the same files twice changes nothing."""
    data = data or FeedbackData()
    check_references(
        data, ratings, data_path=data_path, ratings_path=ratings_path,
        known_widgets=set(Widget.objects.values_list("slug", flat=True)),
        known_fixtures=set(Fixture.objects.values_list("slug", flat=True)),
        known_scenarios=set(Scenario.objects.values_list("external_id", flat=True)),
        known_entries=set(Entry.objects.filter(external_id__in={r.entry_id for r in ratings.ratings} if ratings else set())
                          .values_list("external_id", flat=True)),
    )
    report = ImportReport()

    _, created, updated = _upsert(Widget, "slug", {w.slug: {"name": w.name, "description": w.description} for w in data.widgets})
    _count(report, "widgets", len(data.widgets), created, updated)
    _, created, updated = _upsert(Fixture, "slug", {f.slug: {"name": f.name, "description": f.description, "sites": f.sites} for f in data.fixtures})
    _count(report, "fixtures", len(data.fixtures), created, updated)
    _, created, updated = _upsert(
        Scenario, "external_id",
        {s.id: {"query": s.query, "site": s.site, "role": s.role, "time_range": s.time_range} for s in data.scenarios},
    )
    _count(report, "scenarios", len(data.scenarios), created, updated)

    widget_ids = dict(Widget.objects.values_list("slug", "id"))
    fixture_ids = dict(Fixture.objects.values_list("slug", "id"))
    scenario_ids = dict(Scenario.objects.values_list("external_id", "id"))
    entries, created, updated = _upsert(
        Entry, "external_id",
        {
            e.id: {
                "scenario_id": scenario_ids[e.scenario_id], "widget_id": widget_ids[e.widget], "title": e.title,
                "raw_output": e.raw_output, "source": e.source, "model_version": e.model_version,
            }
            for e in data.entries
        },
    )
    relinked = _sync_m2m(
        Entry.fixtures.through, "entry_id", "fixture_id",
        {entries[e.id].id: {fixture_ids[s] for s in e.fixtures} for e in data.entries},
    )
    relinked_keys = {key for key, row in entries.items() if row.id in relinked}
    _count(report, "entries", len(data.entries), created, updated | (relinked_keys - created))

    if ratings is not None:
        _import_ratings(ratings, report, widget_ids, fixture_ids)
    logger.debug("Import: %s", "; ".join(report.lines()))
    return report


def _import_ratings(ratings: FeedbackRatings, report: ImportReport, widget_ids: dict[str, int], fixture_ids: dict[str, int]) -> None:
    User = get_user_model()
    usernames = {r.rater for r in ratings.ratings} | {r.username for r in ratings.raters}
    existing_users = set(User.objects.filter(username__in=usernames).values_list("username", flat=True))
    new_users = [User(username=name) for name in sorted(usernames - existing_users)]
    for user in new_users:
        user.set_unusable_password()
    User.objects.bulk_create(new_users)
    user_ids = dict(User.objects.filter(username__in=usernames).values_list("username", "id"))
    _, created, updated = _upsert(
        RaterProfile, "user_id",
        {user_ids[r.username]: {"trusted": r.trusted, "simulated": r.simulated} for r in ratings.raters},
    )
    _count(report, "raters", len(ratings.raters), created, updated)

    entry_ids = dict(Entry.objects.filter(external_id__in={r.entry_id for r in ratings.ratings}).values_list("external_id", "id"))
    wanted = {
        (entry_ids[r.entry_id], user_ids[r.rater]): {
            "value": r.rating, "tags": r.tags, "notes": r.notes, "created_at": r.created_at,
            "corrected_widget_id": widget_ids[r.corrected_widget] if r.corrected_widget else None,
        }
        for r in ratings.ratings
    }
    existing = {(row.entry_id, row.rater_id): row for row in Rating.objects.filter(entry_id__in=set(entry_ids.values()))}
    to_create, to_update, now = [], [], timezone.now()
    for (entry_id, rater_id), values in wanted.items():
        row = existing.get((entry_id, rater_id))
        if row is None:
            to_create.append(Rating(entry_id=entry_id, rater_id=rater_id, **values))
        elif any(getattr(row, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = now
            to_update.append(row)
    Rating.objects.bulk_create(to_create, batch_size=500)
    if to_update:
        Rating.objects.bulk_update(to_update, ["value", "tags", "notes", "created_at", "corrected_widget_id", "updated_at"], batch_size=500)
    rating_ids = {
        (row[0], row[1]): row[2]
        for row in Rating.objects.filter(entry_id__in=set(entry_ids.values())).values_list("entry_id", "rater_id", "id")
    }
    relinked = _sync_m2m(
        Rating.corrected_fixtures.through, "rating_id", "fixture_id",
        {
            rating_ids[(entry_ids[r.entry_id], user_ids[r.rater])]: {fixture_ids[s] for s in r.corrected_fixtures}
            for r in ratings.ratings
        },
    )
    created = {(row.entry_id, row.rater_id) for row in to_create}
    updated = {(row.entry_id, row.rater_id) for row in to_update}
    updated |= {key for key, rating_id in rating_ids.items() if rating_id in relinked and key in wanted} - created
    _count(report, "ratings", len(ratings.ratings), created, updated)
