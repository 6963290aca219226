"""The two JSON file formats for feedback, read and checked in one place.

The *data file* holds the catalogs, the scenarios and their entries (the exhaustive simulation's output);
the *ratings file* holds the ratings of those entries. docs/file-formats.md describes both.
Reading a file never touches the database, so the importer and the training side's `file` source share it.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feedback import validation

FORMAT_VERSION = 1


class FeedbackFileError(ValueError):
    """A file that cannot be used; the message names the file, the record and the field."""


def _rule(clean: Any, value: Any) -> Any:
    """Apply one of the shared rating rules; pydantic adds the record and field to the message."""
    try:
        return clean(value)
    except validation.FeedbackValidationError as exc:
        raise ValueError(exc.message) from None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CatalogRecord(_Record):
    """A widget or a fixture."""

    slug: str = Field(min_length=1, max_length=96, pattern=r"^[a-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=160)
    description: str = Field(min_length=1)


WidgetRecord = CatalogRecord


class FixtureRecord(CatalogRecord):
    """A fixture, and the sites that have it (empty: every site)."""

    sites: list[str] = Field(default_factory=list)


class ScenarioRecord(_Record):
    id: str = Field(min_length=1, max_length=64)
    query: str = Field(min_length=1, max_length=2_000)
    site: str = ""
    role: str = ""
    time_range: str = ""


class EntryRecord(_Record):
    id: str = Field(min_length=1, max_length=128)
    scenario_id: str = Field(min_length=1)
    widget: str = Field(min_length=1)
    fixtures: list[str] = Field(min_length=1)
    title: str = Field(default="", max_length=200)
    raw_output: str = ""
    source: Literal["simulation", "model", "production", "import"] = "simulation"
    model_version: str = Field(default="", max_length=120)


class RaterRecord(_Record):
    username: str = Field(min_length=1, max_length=150)
    trusted: bool = True
    simulated: bool = False


class RatingRecord(_Record):
    entry_id: str = Field(min_length=1)
    rating: str
    rater: str = Field(min_length=1, max_length=150)
    created_at: datetime
    tags: list[str] = Field(default_factory=list)
    notes: str = ""
    corrected_widget: str | None = None
    corrected_fixtures: list[str] = Field(default_factory=list)

    @field_validator("rating")
    @classmethod
    def _rating_is_up_or_down(cls, value: str) -> str:
        return _rule(validation.clean_rating_value, value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags_follow_rules(cls, value: Any) -> list[str]:
        return _rule(validation.clean_tags, value)

    @field_validator("notes", mode="before")
    @classmethod
    def _notes_follow_rules(cls, value: Any) -> str:
        return _rule(validation.clean_notes, value)

    @field_validator("created_at")
    @classmethod
    def _created_at_has_timezone(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone, e.g. 2026-11-01T09:30:00Z")
        return value


class FeedbackData(_Record):
    format_version: Literal[1] = FORMAT_VERSION
    widgets: list[WidgetRecord] = Field(default_factory=list)
    fixtures: list[FixtureRecord] = Field(default_factory=list)
    scenarios: list[ScenarioRecord] = Field(default_factory=list)
    entries: list[EntryRecord] = Field(default_factory=list)


class FeedbackRatings(_Record):
    format_version: Literal[1] = FORMAT_VERSION
    raters: list[RaterRecord] = Field(default_factory=list)
    ratings: list[RatingRecord] = Field(default_factory=list)


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(path: str, error: ValidationError) -> str:
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{path}: {_location(first['loc'])}: {message}{more}"


def _load_json(path: Path) -> Any:
    if not path.exists():
        raise FeedbackFileError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FeedbackFileError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except UnicodeDecodeError as exc:
        raise FeedbackFileError(f"{path}: not UTF-8 text: {exc}") from exc


def _duplicates(kind: str, path: Path, keys: list[str]) -> None:
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key in seen:
            raise FeedbackFileError(f"{path}: {kind}[{index}]: duplicate identifier {key!r}")
        seen.add(key)


def parse_data(raw: Any, path: str | Path = "<data>") -> FeedbackData:
    path = Path(path)
    try:
        data = FeedbackData.model_validate(raw)
    except ValidationError as exc:
        raise FeedbackFileError(_describe(str(path), exc)) from exc
    _duplicates("widgets", path, [w.slug for w in data.widgets])
    _duplicates("fixtures", path, [f.slug for f in data.fixtures])
    _duplicates("scenarios", path, [s.id for s in data.scenarios])
    _duplicates("entries", path, [e.id for e in data.entries])
    return data


def parse_ratings(raw: Any, path: str | Path = "<ratings>") -> FeedbackRatings:
    path = Path(path)
    try:
        ratings = FeedbackRatings.model_validate(raw)
    except ValidationError as exc:
        raise FeedbackFileError(_describe(str(path), exc)) from exc
    _duplicates("raters", path, [r.username for r in ratings.raters])
    _duplicates("ratings", path, [f"{r.entry_id} by {r.rater}" for r in ratings.ratings])
    return ratings


def read_data_file(path: str | Path) -> FeedbackData:
    return parse_data(_load_json(Path(path)), path)


def read_ratings_file(path: str | Path) -> FeedbackRatings:
    return parse_ratings(_load_json(Path(path)), path)


def check_references(
    data: FeedbackData,
    ratings: FeedbackRatings | None,
    *,
    data_path: str | Path = "<data>",
    ratings_path: str | Path = "<ratings>",
    known_widgets: set[str] = frozenset(),
    known_fixtures: set[str] = frozenset(),
    known_scenarios: set[str] = frozenset(),
    known_entries: set[str] = frozenset(),
) -> None:
    """Every identifier a record uses must be defined in the data file or already known (e.g. in the database)."""
    widgets = known_widgets | {w.slug for w in data.widgets}
    fixtures = known_fixtures | {f.slug for f in data.fixtures}
    scenarios = known_scenarios | {s.id for s in data.scenarios}
    for index, entry in enumerate(data.entries):
        where = f"{data_path}: entries[{index}]"
        if entry.scenario_id not in scenarios:
            raise FeedbackFileError(f"{where}.scenario_id: unknown scenario {entry.scenario_id!r}")
        if entry.widget not in widgets:
            raise FeedbackFileError(f"{where}.widget: unknown widget {entry.widget!r}")
        for slug in entry.fixtures:
            if slug not in fixtures:
                raise FeedbackFileError(f"{where}.fixtures: unknown fixture {slug!r}")
    if ratings is None:
        return
    entries = known_entries | {e.id for e in data.entries}
    for index, rating in enumerate(ratings.ratings):
        where = f"{ratings_path}: ratings[{index}]"
        if rating.entry_id not in entries:
            raise FeedbackFileError(f"{where}.entry_id: unknown entry {rating.entry_id!r}")
        if rating.corrected_widget is not None and rating.corrected_widget not in widgets:
            raise FeedbackFileError(f"{where}.corrected_widget: unknown widget {rating.corrected_widget!r}")
        if rating.corrected_fixtures and rating.corrected_widget is None:
            raise FeedbackFileError(f"{where}.corrected_fixtures: a correction needs corrected_widget too")
        for slug in rating.corrected_fixtures:
            if slug not in fixtures:
                raise FeedbackFileError(f"{where}.corrected_fixtures: unknown fixture {slug!r}")


def write_json(path: str | Path, model: BaseModel) -> None:
    Path(path).write_text(model.model_dump_json(indent=1) + "\n", encoding="utf-8")
