"""THE definition of the widget-pick task: what the model is asked, and how its answer is written and read.

Training, evaluation, export (the Modelfile's SYSTEM) and serving all call this module, so a model is trained on
exactly the prompt it is later asked. Nothing else builds these prompts.

A prompt lists the whole widget catalog and a shortlist of at most `FIXTURE_SHORTLIST_SIZE` fixtures retrieved for
the question with BM25 (a real site has thousands of points; the prompt cannot list them all).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

FIXTURE_SHORTLIST_SIZE = 6

SYSTEM_PROMPT = (
    "Pick the dashboard widget and the fixtures (data sources) that answer the operator's question. "
    'Reply with JSON only: {"widget": "<id>", "fixtures": ["<id>"], "title": "<short title>"}'
)

# Matches word tokens including single characters, so "AHU-3" keeps its "3".
_TOKEN_PATTERN = r"(?u)\b\w+\b"


@dataclass(frozen=True)
class CatalogItem:
    slug: str
    name: str
    description: str


@dataclass(frozen=True)
class ScenarioText:
    """What the operator asked, and the context the prompt shows."""

    query: str
    site: str = ""
    role: str = ""
    time_range: str = ""


@dataclass(frozen=True)
class Pick:
    """A widget and the fixtures it shows, as the model answers it."""

    widget: str
    fixtures: tuple[str, ...]
    title: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixtures", tuple(sorted(set(self.fixtures))))

    def same_choice(self, other: Pick) -> bool:
        """Same widget and fixtures; the title is free text and does not count."""
        return (self.widget, self.fixtures) == (other.widget, other.fixtures)


class PickParseError(ValueError):
    """A model's answer that is not a usable pick; `reason` is a short category for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Catalog:
    """The widget and fixture catalogs, with the fixture retriever built over them once."""

    widgets: tuple[CatalogItem, ...]
    fixtures: tuple[CatalogItem, ...]
    shortlist_size: int = FIXTURE_SHORTLIST_SIZE
    _retriever_cache: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @cached_property
    def widget_slugs(self) -> frozenset[str]:
        return frozenset(w.slug for w in self.widgets)

    @cached_property
    def fixture_slugs(self) -> frozenset[str]:
        return frozenset(f.slug for f in self.fixtures)

    @cached_property
    def fixtures_by_slug(self) -> dict[str, CatalogItem]:
        return {f.slug: f for f in self.fixtures}

    def _retriever(self) -> Any:
        if "bm25" not in self._retriever_cache:
            import bm25s

            corpus = [f"{f.slug.replace('_', ' ')} {f.name} {f.description}" for f in self.fixtures]
            retriever = bm25s.BM25()
            retriever.index(
                bm25s.tokenize(corpus, token_pattern=_TOKEN_PATTERN, stopwords="en", return_ids=False, show_progress=False),
                show_progress=False,
            )
            self._retriever_cache["bm25"] = retriever
        return self._retriever_cache["bm25"]

    def fixture_shortlist(self, query: str) -> list[str]:
        """The fixtures the prompt offers for `query`: the BM25 top `shortlist_size`, in catalog order."""
        shortlists = self._retriever_cache.setdefault("shortlists", {})
        if query not in shortlists:
            shortlists[query] = self._retrieve(query)
        return list(shortlists[query])

    def _retrieve(self, query: str) -> tuple[str, ...]:
        k = min(self.shortlist_size, len(self.fixtures))
        if k == len(self.fixtures):
            return tuple(sorted(self.fixture_slugs))
        import bm25s

        tokens = bm25s.tokenize([query], token_pattern=_TOKEN_PATTERN, stopwords="en", return_ids=False, show_progress=False)
        indices, _scores = self._retriever().retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return tuple(sorted(self.fixtures[int(i)].slug for i in indices[0]))


def build_messages(scenario: ScenarioText, catalog: Catalog) -> list[dict[str, str]]:
    """The chat messages that ask a model for a pick (system + user), for the tokenizer's chat template."""
    widgets = "\n".join(f"- {w.slug}: {w.description}" for w in catalog.widgets)
    fixtures = "\n".join(
        f"- {slug}: {catalog.fixtures_by_slug[slug].description}" for slug in catalog.fixture_shortlist(scenario.query)
    )
    context = "; ".join(
        f"{label}: {value}" for label, value in (("Site", scenario.site), ("Role", scenario.role), ("Time", scenario.time_range)) if value
    )
    user = f"Widgets:\n{widgets}\nFixtures:\n{fixtures}\n{context}\nQuestion: {scenario.query}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def render_pick(pick: Pick) -> str:
    """The assistant's answer for `pick`: compact JSON, keys in a fixed order."""
    return json.dumps({"widget": pick.widget, "fixtures": list(pick.fixtures), "title": pick.title}, ensure_ascii=False)


def assistant_message(pick: Pick) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": render_pick(pick)}]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def _first_json_object(text: str) -> Any:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start in [i for i, ch in enumerate(candidate) if ch == "{"]:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    if "{" in text:
        raise PickParseError("invalid_json", f"no complete JSON object in the answer (truncated?): {text[:120]!r}")
    raise PickParseError("no_json", f"no JSON object in the answer: {text[:120]!r}")


def parse_pick(text: str, catalog: Catalog) -> Pick:
    """Read a model's answer back into a pick, tolerating prose and code fences around the JSON.

    Raises PickParseError (never a json exception) for garbage, unknown widgets or unknown fixtures.
    """
    value = _first_json_object(text)
    widget = value.get("widget")
    fixtures = value.get("fixtures", [])
    title = value.get("title", "")
    if not isinstance(widget, str):
        raise PickParseError("missing_widget", "the answer has no \"widget\" string")
    if isinstance(fixtures, str):
        fixtures = [fixtures]
    if not isinstance(fixtures, list) or not all(isinstance(f, str) for f in fixtures):
        raise PickParseError("bad_fixtures", "\"fixtures\" is not a list of ids")
    if widget not in catalog.widget_slugs:
        raise PickParseError("unknown_widget", f"unknown widget {widget!r}")
    unknown = [f for f in fixtures if f not in catalog.fixture_slugs]
    if unknown:
        raise PickParseError("unknown_fixture", f"unknown fixtures {unknown}")
    if not fixtures:
        raise PickParseError("no_fixtures", "the answer names no fixture")
    return Pick(widget=widget, fixtures=tuple(fixtures), title=title if isinstance(title, str) else "")
