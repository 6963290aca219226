"""THE definition of the widget-pick task: what the model is asked, and how its answer is written and read.

Training, evaluation, export (the Modelfile's SYSTEM) and serving all call this module, so a model is trained on
exactly the prompt it is later asked. Nothing else builds these prompts.

A prompt lists the whole widget catalog, the question, a shortlist of at most `FIXTURE_SHORTLIST_SIZE` fixtures of the
scenario's site retrieved for the question with BM25 and word embeddings (a real site has thousands of points; the
prompt cannot list them all; RL_SHORTLIST_DENSE_WEIGHT weighs the embeddings, `dense_weight_from_env`), best match
first, the site, role and time, and the question again. The one exception to "the prompt it is later asked": a run
with `chosen_fixtures_first` (the `cpu` preset) trains on prompts whose shortlist lists the rated answer's fixtures
first, the rest in BM25's order (`rl.data.chosen_first`), so the model learns to take the list's first fixtures,
whichever retriever ranked it. A causal model reads each fixture's
description with the question before it, so it can weigh the description against what was asked, and the question
is still the last thing it reads before it answers (docs/training-recipe.md, rounds twelve and thirteen). The answer
names its widget, then its fixtures in the shortlist's order (best match first), then a title: a model that has
written the widget knows how many fixtures it shows (a scatter plot two, the others one). Written fixtures first
(the order until 2026-12-05) it had to settle that count before naming the widget, and stopped after one fixture on
every natural question (docs/training-recipe.md, round five). `answer_schema` is the JSON schema of a valid answer
to one prompt (widget from the catalog, fixtures from that prompt's shortlist): evaluation decodes under it and
serving passes it to Ollama as `format`.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

FIXTURE_SHORTLIST_SIZE = 6
MAX_FIXTURES_PER_PICK = 3
MAX_TITLE_CHARS = 60
# The tokens an answer may take, for every model that writes one (evaluation, the deploy gate, serving): above the
# longest answer the schema allows in SmolLM2's tokens (three of the catalog's longest fixture ids, its longest widget
# id, a 60-character title at one token a character: tests/test_prompts.py measures it). A limit below that cut answers
# the schema allows, inside their title, into invalid JSON: 96 did so to 7 of the real base model's 278 natural answers.
ANSWER_TOKEN_LIMIT = 128
# Short, so the prompt that says the question twice stays within 400 tokens; the answer's form is the schema's to
# enforce (`answer_schema`, passed to every decoder and to Ollama as `format`), so the prompt only names its keys.
SYSTEM_PROMPT = (
    "Pick the widget and the fixtures (data sources) that answer the question. "
    "Reply with JSON: widget, fixtures, title."
)


# Matches word tokens including single characters, so "AHU-3" keeps its "3".
_TOKEN_PATTERN = r"(?u)\b\w+\b"


# "AHU2" and "L3" are said as often as "AHU-2" and "level 3": split letters from digits before matching.
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")


def _retrieval_text(text: str) -> str:
    return _LETTER_DIGIT.sub(" ", text.replace("_", " "))


def _bm25s() -> Any:
    """bm25s, imported with JAX (which it uses when installed, and initializes at import) kept off the GPU: on a GPU
    server with jax[cuda] installed JAX would otherwise preallocate 75% of the GPU's memory in every process that
    builds a prompt, the trainer's included, for a top-k over a few hundred fixtures."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import bm25s

    return bm25s


def dense_weight_from_env() -> float:
    """RL_SHORTLIST_DENSE_WEIGHT: the weight of WordLlama's similarity of question and fixture beside BM25's score in
    the shortlist's ranking, each scaled to [0, 1] over the site's fixtures; 0 is BM25 alone, 1 the default. It finds
    fixtures by meaning where the words differ ("outside" for "outdoor"): at 1, the top k is right for 0.845 of the
    demo's questions instead of BM25's 0.825, and for 0.880 / 0.875 of the natural set's gate / sealed parts instead
    of 0.867 / 0.783. Models trained on its lists lose widget accuracy (docs/training-recipe.md, rounds seventeen and
    nineteen), so a `chosen_fixtures_first` run ranks its training prompts with BM25 alone and is asked with this."""
    raw = os.environ.get("RL_SHORTLIST_DENSE_WEIGHT", "1")
    try:
        weight = float(raw)
    except ValueError:
        raise ValueError(f"RL_SHORTLIST_DENSE_WEIGHT must be a number >= 0, not {raw!r}") from None
    if not 0 <= weight < float("inf"):
        raise ValueError(f"RL_SHORTLIST_DENSE_WEIGHT must be a number >= 0, not {raw!r}")
    return weight


@functools.cache
def _word_embeddings() -> Any:
    """WordLlama (l2_supercat, 256 dimensions): token embeddings distilled from LLMs, mean-pooled; its wheel ships the
    weights and tokenizer, loaded from the package's folder so nothing is downloaded."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import wordllama

    # wordllama calls logging.basicConfig(level=INFO) when imported: the root logger's new handler then printed every
    # library's records that Django's LOGGING leaves alone (bm25s's DEBUG line per index, httpx's requests, the GGUF
    # writer's INFO lines), about 50 lines of the demo's log.
    root.handlers[:] = handlers
    root.setLevel(level)
    return wordllama.WordLlama.load(dim=256, cache_dir=Path(wordllama.__file__).parent, disable_download=True)


def _unit_embeddings(texts: list[str]) -> Any:
    """Unit-length embeddings of `texts`, one row each (zeros where a text has no known token)."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(_word_embeddings().embed(texts, norm=True), nan=0.0)


def _unit_scaled(scores: Any) -> Any:
    spread = float(scores.max() - scores.min())
    return (scores - scores.min()) / spread if spread > 0 else scores * 0.0


def _retrieval_tokens(texts: list[str]) -> Any:
    """Word tokens for BM25: stopwords dropped, English stems ("temperatures" finds "temperature")."""
    import Stemmer

    bm25s = _bm25s()
    return bm25s.tokenize([_retrieval_text(t) for t in texts], token_pattern=_TOKEN_PATTERN, stopwords="en",
                          stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False)


@dataclass(frozen=True)
class CatalogItem:
    slug: str
    name: str
    description: str
    sites: tuple[str, ...] = ()  # fixtures only: the sites that have it; empty: every site

    def at_site(self, site: str) -> bool:
        return not self.sites or not site or site in self.sites


def _fixture_text(fixture: CatalogItem) -> str:
    """What the retrievers match a question against."""
    return f"{fixture.slug} {fixture.name} {fixture.description}"


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
    dense_weight: float = field(default_factory=dense_weight_from_env)
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

    def _site_key(self, site: str) -> str:
        return site if site in self.sites else ""

    def _retriever(self, site: str) -> tuple[Any, list[CatalogItem]]:
        """BM25 over the fixtures of `site` (every fixture when the site is unknown or empty), built once per site."""
        key = ("bm25", self._site_key(site))
        if key not in self._retriever_cache:
            fixtures = [f for f in self.fixtures if f.at_site(key[1])]
            retriever = _bm25s().BM25()
            retriever.index(_retrieval_tokens([_fixture_text(f) for f in fixtures]), show_progress=False)
            self._retriever_cache[key] = (retriever, fixtures)
        return self._retriever_cache[key]

    def _fixture_embeddings(self, site: str) -> Any:
        """The unit embeddings of the fixtures `_retriever(site)` ranks, in its order, computed once per site."""
        key = ("embeddings", self._site_key(site))
        if key not in self._retriever_cache:
            _retriever, fixtures = self._retriever(site)
            self._retriever_cache[key] = _unit_embeddings([_retrieval_text(_fixture_text(f)) for f in fixtures])
        return self._retriever_cache[key]

    @cached_property
    def sites(self) -> frozenset[str]:
        return frozenset(site for f in self.fixtures for site in f.sites)

    def fixture_shortlist(self, query: str, site: str = "") -> list[str]:
        """The fixtures the prompt offers for `query` at `site`: the top `shortlist_size`, best match first."""
        shortlists = self._retriever_cache.setdefault("shortlists", {})
        if (query, site) not in shortlists:
            shortlists[(query, site)] = self._retrieve(query, site)
        return list(shortlists[(query, site)])

    def _retrieve(self, query: str, site: str) -> tuple[str, ...]:
        if self.dense_weight > 0:
            return self._retrieve_with_embeddings(query, site)
        retriever, fixtures = self._retriever(site)
        k = min(self.shortlist_size, len(fixtures))
        tokens = _retrieval_tokens([query])
        if not tokens[0]:
            return tuple(f.slug for f in fixtures[:k])
        indices, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1, backend_selection="numpy")
        # Equal scores in catalog order, so the shortlist does not depend on how the retriever breaks ties.
        ranked = sorted(zip(scores[0], indices[0]), key=lambda hit: (-float(hit[0]), int(hit[1])))
        return tuple(fixtures[int(i)].slug for _score, i in ranked)

    def _retrieve_with_embeddings(self, query: str, site: str) -> tuple[str, ...]:
        """The top `shortlist_size` by BM25's score over its highest plus `dense_weight` times the embedding similarity
        scaled to [0, 1] across the site's fixtures."""
        import numpy as np

        retriever, fixtures = self._retriever(site)
        lexical = np.zeros(len(fixtures))
        tokens = _retrieval_tokens([query])
        if tokens[0]:
            indices, scores = retriever.retrieve(tokens, k=len(fixtures), show_progress=False, n_threads=1, backend_selection="numpy")
            lexical[indices[0]] = scores[0]
        if lexical.max() > 0:
            lexical /= lexical.max()
        similarities = self._fixture_embeddings(site) @ _unit_embeddings([query])[0]
        combined = lexical + self.dense_weight * _unit_scaled(similarities)
        ranked = sorted(range(len(fixtures)), key=lambda i: (-float(combined[i]), i))
        return tuple(fixtures[i].slug for i in ranked[: self.shortlist_size])

    def shortlist_for(self, scenario: ScenarioText) -> list[str]:
        return self.fixture_shortlist(scenario.query, scenario.site)


def build_messages(scenario: ScenarioText, catalog: Catalog, shortlist: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The chat messages that ask a model for a pick (system + user), for the tokenizer's chat template. `shortlist`:
    the fixtures the prompt offers, in order; by default the retriever's shortlist for the scenario's question."""
    widgets = "\n".join(f"- {w.slug}: {w.description}" for w in catalog.widgets)
    offered = catalog.shortlist_for(scenario) if shortlist is None else shortlist
    fixtures = "\n".join(f"- {slug}: {catalog.fixtures_by_slug[slug].description}" for slug in offered)
    context = "; ".join(
        f"{label}: {value}" for label, value in (("Site", scenario.site), ("Role", scenario.role), ("Time", scenario.time_range)) if value
    )
    question = f"Question: {scenario.query}"
    user = "\n".join([f"Widgets:\n{widgets}", question, f"Fixtures:\n{fixtures}", *([context] if context else []), question])
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def render_pick(pick: Pick, shortlist: Sequence[str] = ()) -> str:
    """The assistant's answer for `pick`: compact JSON, keys in a fixed order (widget, fixtures, title), the fixtures
    in the order of the prompt's `shortlist` (best match first; any it does not hold after them, by slug)."""
    return json.dumps({"widget": pick.widget, "fixtures": fixtures_in_answer_order(pick.fixtures, shortlist), "title": pick.title},
                      ensure_ascii=False)


def fixtures_in_answer_order(fixtures: Sequence[str], shortlist: Sequence[str]) -> list[str]:
    """A pick's fixtures as its answer writes them: in the order of the prompt's shortlist, any it does not hold
    after them, by slug."""
    rank = {slug: i for i, slug in enumerate(shortlist)}
    return sorted(fixtures, key=lambda slug: (rank.get(slug, len(rank)), slug))


def decision_length(answer: str) -> int:
    """How many leading characters of a rendered answer carry the decision (fixtures and widget); the title follows."""
    index = answer.find(', "title"')
    return index if index >= 0 else len(answer)


def answer_schema(scenario: ScenarioText, catalog: Catalog) -> dict[str, Any]:
    """The JSON schema of a valid answer to this scenario's prompt: a catalog widget, 1 to 3 distinct fixtures of the
    prompt's shortlist, a short title. Keys in `render_pick`'s order, so constrained decoding writes the same
    text."""
    shortlist = catalog.shortlist_for(scenario)
    return {
        "type": "object",
        "properties": {
            "widget": {"type": "string", "enum": sorted(catalog.widget_slugs)},
            "fixtures": {"type": "array", "items": {"type": "string", "enum": shortlist}, "minItems": 1,
                         "maxItems": min(MAX_FIXTURES_PER_PICK, len(shortlist))},
            "title": {"type": "string", "maxLength": MAX_TITLE_CHARS},
        },
        "required": ["widget", "fixtures", "title"],
        "additionalProperties": False,
    }


def decision_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`answer_schema` with an empty title: an answer that ends where its decision (widget, then fixtures) does. Decoded
    under it a model makes the same decision as under the whole schema in the fewer tokens that scoring a pick needs:
    evaluation, the gate and the pick checks during training decode under it. The title stays, empty, because the
    token that closes the fixtures carries the comma before the title (`"],`): a schema that ended at the fixtures
    would allow only `"]`, which a trained model never writes, and so push it on to a second fixture."""
    return {**schema, "properties": {**schema["properties"], "title": {"type": "string", "maxLength": 0}}}


def assistant_message(pick: Pick, scenario: ScenarioText, catalog: Catalog) -> list[dict[str, str]]:
    """The answer to `scenario`'s prompt as a chat turn: its fixtures in the prompt's shortlist order, as a model that
    writes the best match first goes on to a scatter plot's second source (in slug order a model that wrote the
    better-ranked one first had learnt to stop there)."""
    return [{"role": "assistant", "content": render_pick(pick, catalog.shortlist_for(scenario))}]


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


def answered_widget(text: str) -> str | None:
    """The widget an answer names, unchecked against a catalog; None when it names none."""
    try:
        widget = _first_json_object(text).get("widget")
    except PickParseError:
        return None
    return widget if isinstance(widget, str) else None


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
