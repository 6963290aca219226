"""The rules a rating must follow, wherever it comes from (rating UI, API, imported file)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

RATING_VALUES = ("up", "down")
MAX_NOTES_CHARS = 5_000
MAX_TAGS = 20
MAX_TAG_CHARS = 50
LOW_CONFIDENCE_TAG = "low_confidence"


def rating_is_usable(*, trusted: bool, tags: Iterable[str] | None) -> bool:
    """The one rule for which ratings train models and count in served up-rates: a trusted rater's, not tagged
    low_confidence."""
    return trusted and LOW_CONFIDENCE_TAG not in (tags or ())


class FeedbackValidationError(ValueError):
    """Bad input; `field` names what is wrong, so the caller can report it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class RatingInput:
    """A rating checked against the rules, before it meets the database."""

    value: str
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    corrected_widget: str | None = None
    corrected_fixtures: list[str] = field(default_factory=list)


def clean_rating_value(value: Any) -> str:
    if value not in RATING_VALUES:
        raise FeedbackValidationError("rating", f"must be 'up' or 'down', got {value!r}")
    return value


def clean_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [t for t in (part.strip() for part in tags.split(",")) if t]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise FeedbackValidationError("tags", "must be a list of strings")
    tags = [t.strip() for t in tags if t.strip()]
    if len(tags) > MAX_TAGS:
        raise FeedbackValidationError("tags", f"at most {MAX_TAGS} tags, got {len(tags)}")
    for tag in tags:
        if len(tag) > MAX_TAG_CHARS:
            raise FeedbackValidationError("tags", f"each tag at most {MAX_TAG_CHARS} characters, got {len(tag)}")
    return list(dict.fromkeys(tags))


def clean_notes(notes: Any) -> str:
    if notes is None:
        return ""
    if not isinstance(notes, str):
        raise FeedbackValidationError("notes", "must be a string")
    if len(notes) > MAX_NOTES_CHARS:
        raise FeedbackValidationError("notes", f"at most {MAX_NOTES_CHARS} characters, got {len(notes)}")
    return notes


def clean_slug_list(name: str, slugs: Any) -> list[str]:
    if slugs is None:
        return []
    if not isinstance(slugs, list) or not all(isinstance(s, str) and s for s in slugs):
        raise FeedbackValidationError(name, "must be a list of identifiers")
    return sorted(set(slugs))


def clean_rating(
    value: Any, tags: Any = None, notes: Any = None, corrected_widget: Any = None, corrected_fixtures: Any = None
) -> RatingInput:
    if corrected_widget in ("", None):
        corrected_widget = None
    elif not isinstance(corrected_widget, str):
        raise FeedbackValidationError("corrected_widget", "must be a widget identifier")
    fixtures = clean_slug_list("corrected_fixtures", corrected_fixtures)
    if fixtures and corrected_widget is None:
        raise FeedbackValidationError("corrected_fixtures", "a correction needs corrected_widget too")
    return RatingInput(
        value=clean_rating_value(value),
        tags=clean_tags(tags),
        notes=clean_notes(notes),
        corrected_widget=corrected_widget,
        corrected_fixtures=fixtures,
    )
