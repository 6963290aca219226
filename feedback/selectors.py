"""Reads of the feedback domain: usable ratings, what a rater sees next, progress, and the database as import files."""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet

from feedback.files import (
    EntryRecord,
    FeedbackData,
    FeedbackRatings,
    FixtureRecord,
    RaterRecord,
    RatingRecord,
    ScenarioRecord,
    WidgetRecord,
)
from feedback.models import Entry, Fixture, RaterProfile, Rating, Scenario, Widget
from feedback.validation import rating_is_usable


def usable_ratings(ratings: QuerySet[Rating] | None = None) -> QuerySet[Rating]:
    """The ratings that train models and count in served up-rates (`rating_is_usable`), of `ratings` (default: all)."""
    ratings = (Rating.objects.all() if ratings is None else ratings).exclude(rater__rater_profile__trusted=False)
    # tags is a JSON list and SQLite has no JSON `contains`, so the tag half of the rule runs here.
    low_confidence = [pk for pk, tags in ratings.values_list("pk", "tags") if not rating_is_usable(trusted=True, tags=tags)]
    return ratings.exclude(pk__in=low_confidence) if low_confidence else ratings


def entries_unrated_by(rater: AbstractBaseUser) -> QuerySet[Entry]:
    rated = Rating.objects.filter(entry=OuterRef("pk"), rater=rater)
    return Entry.objects.filter(~Exists(rated))


def entry_next_unrated(rater: AbstractBaseUser, *, after: Entry | None = None, least_confident_first: bool | None = None) -> Entry | None:
    """The next entry `rater` has not rated, in catalog order, or (`least_confident_first`, default the setting
    RL_RATE_LEAST_CONFIDENT_FIRST) the picks the serving engine was least sure of first, then the rest in catalog
    order; `after` skips past an entry."""
    if least_confident_first is None:
        least_confident_first = settings.RL_RATE_LEAST_CONFIDENT_FIRST
    queryset = entries_unrated_by(rater).select_related("scenario", "widget").prefetch_related("fixtures")
    in_catalog_order = Q(scenario__external_id__gt=after.scenario.external_id) | Q(
        scenario__external_id=after.scenario.external_id, external_id__gt=after.external_id) if after is not None else Q()
    if least_confident_first:
        queryset = queryset.order_by(F("confidence").asc(nulls_last=True), "scenario__external_id", "external_id")
        if after is not None and after.confidence is not None:
            in_catalog_order = (Q(confidence__gt=after.confidence) | Q(confidence__isnull=True)
                                | Q(confidence=after.confidence) & in_catalog_order)
        elif after is not None:
            in_catalog_order = Q(confidence__isnull=True) & in_catalog_order
    if after is not None:
        later = queryset.filter(in_catalog_order).first()
        if later is not None:
            return later
    return queryset.first()


def rating_progress(rater: AbstractBaseUser) -> tuple[int, int]:
    """(entries rated by `rater`, entries in all)."""
    return Rating.objects.filter(rater=rater).count(), Entry.objects.count()


def scenario_variants(scenario: Scenario, rater: AbstractBaseUser) -> list[tuple[Entry, Rating | None]]:
    """Every entry of one scenario, with `rater`'s rating of each if any."""
    entries = list(scenario.entries.select_related("widget").prefetch_related("fixtures"))
    mine = {r.entry_id: r for r in Rating.objects.filter(rater=rater, entry__scenario=scenario)}
    return [(entry, mine.get(entry.pk)) for entry in entries]


@dataclass(frozen=True)
class RaterAgreement:
    """How often a rater's verdicts match the majority of the other raters of the same entries."""

    ratings: int
    compared: int  # ratings of entries where the other raters had a majority (no tie)
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def __str__(self) -> str:
        return f"{self.rate:.0%} of {self.compared}" if self.compared else "no shared entries"


def rater_agreement(rater_ids: Iterable[int] | None = None) -> dict[int, RaterAgreement]:
    """Per rater: agreement with the majority verdict of the OTHER raters of each entry they rated."""
    wanted = None if rater_ids is None else set(rater_ids)
    ratings = Rating.objects.all() if wanted is None else Rating.objects.filter(
        entry_id__in=Rating.objects.filter(rater_id__in=wanted).values("entry_id"))
    votes: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for entry_id, rater_id, value in ratings.values_list("entry_id", "rater_id", "value").iterator():
        votes[entry_id].append((rater_id, value))
    tally: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for entry_votes in votes.values():
        for rater_id, value in entry_votes:
            if wanted is not None and rater_id not in wanted:
                continue
            counts = tally[rater_id]
            counts[0] += 1
            others = Counter(v for r, v in entry_votes if r != rater_id)
            if others and others["up"] != others["down"]:
                counts[1] += 1
                counts[2] += value == others.most_common(1)[0][0]
    return {rater_id: RaterAgreement(*counts) for rater_id, counts in tally.items()}


def feedback_data_export(entries: QuerySet[Entry] | None = None) -> FeedbackData:
    """The catalogs, and the scenarios and entries of `entries` (all when None), as a data file."""
    entries = (entries if entries is not None else Entry.objects.all()).select_related("scenario", "widget").prefetch_related(
        Prefetch("fixtures", queryset=Fixture.objects.only("slug"))
    )
    entries = list(entries.order_by("external_id"))
    scenarios = Scenario.objects.filter(pk__in={e.scenario_id for e in entries})
    return FeedbackData(
        widgets=[WidgetRecord(slug=w.slug, name=w.name, description=w.description) for w in Widget.objects.all()],
        fixtures=[FixtureRecord(slug=f.slug, name=f.name, description=f.description, sites=f.sites) for f in Fixture.objects.all()],
        scenarios=[
            ScenarioRecord(id=s.external_id, query=s.query, site=s.site, role=s.role, time_range=s.time_range)
            for s in scenarios
        ],
        entries=[
            EntryRecord(
                id=e.external_id, scenario_id=e.scenario.external_id, widget=e.widget.slug, fixtures=e.fixture_slugs(),
                title=e.title, raw_output=e.raw_output, source=e.source, model_version=e.model_version,
            )
            for e in entries
        ],
    )


def feedback_ratings_export(ratings: QuerySet[Rating] | None = None) -> FeedbackRatings:
    """`ratings` (all when None) as a ratings file, with the profiles of their raters."""
    ratings = (ratings if ratings is not None else Rating.objects.all()).select_related(
        "entry", "rater", "corrected_widget"
    ).prefetch_related(Prefetch("corrected_fixtures", queryset=Fixture.objects.only("slug")))
    ratings = list(ratings.order_by("entry__external_id", "rater__username"))
    profiles = RaterProfile.objects.filter(user_id__in={r.rater_id for r in ratings}).select_related("user")
    return FeedbackRatings(
        raters=[RaterRecord(username=p.user.username, trusted=p.trusted, simulated=p.simulated) for p in profiles.order_by("user__username")],
        ratings=[
            RatingRecord(
                entry_id=r.entry.external_id, rating=r.value, rater=r.rater.username, created_at=r.created_at,
                tags=r.tags, notes=r.notes, corrected_widget=r.corrected_widget.slug if r.corrected_widget else None,
                corrected_fixtures=sorted(f.slug for f in r.corrected_fixtures.all()),
            )
            for r in ratings
        ],
    )
