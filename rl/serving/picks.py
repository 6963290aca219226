"""Serving picks: ask the live model (or, for a share of requests, an A/B candidate) through the serving engine.

The prompt and the answer's JSON schema come from `rl.core.prompts`, the same as in training and evaluation; the schema
goes to the engine (`rl.serving.backends`: Ollama's `format`, or the OpenAI API's `response_format`), so the answer is
decoded under it. The answer is parsed by `rl.core.prompts.parse_pick` and stored as an Entry with the exact model
version that produced it (the version's own name is asked, not the live alias, so a deploy in between cannot mislabel
an answer). Anything that goes wrong raises a `ServingError` before anything is stored.
"""
from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from rl.core.config import ServingConfig, serving_config
from rl.core.prompts import Catalog, Pick, PickParseError, ScenarioText, answer_schema, build_messages, parse_pick
from rl.serving.backends import chat_backend
from rl.serving.errors import NoLiveModel, ServingError, UnusableAnswer
from rl.serving.metrics import PICK_SECONDS, PICKS_SERVED, SERVING_ERRORS

__all__ = ["LIVE", "CANDIDATE", "ServingError", "ServedPick", "Answer", "route", "current_catalog", "choose_version",
           "ask_pick", "store_pick", "pick_widget"]

logger = logging.getLogger(__name__)


LIVE, CANDIDATE = "live", "candidate"


@dataclass(frozen=True)
class ServedPick:
    entry: Any  # feedback.models.Entry
    pick: Pick
    model_version: str
    arm: str  # live or candidate
    raw_output: str
    seconds: float


def route(request_key: str, share: float) -> str:
    """`candidate` for about `share` of request keys, `live` for the rest; the same key always goes the same way."""
    position = int.from_bytes(hashlib.sha256(request_key.encode()).digest()[:8], "big") / 2**64
    return CANDIDATE if position < share else LIVE


_catalog_cache: dict[str, Catalog] = {}


def current_catalog() -> Catalog:
    """The database's catalogs; rebuilt (with its retrievers) only when a widget or fixture changed."""
    from rl.data.snapshot import catalog_from_rows, catalog_rows_from_db

    rows = catalog_rows_from_db()
    key = hashlib.sha256(repr(rows).encode()).hexdigest()
    if key not in _catalog_cache:
        _catalog_cache.clear()
        _catalog_cache[key] = catalog_from_rows(*rows)
    return _catalog_cache[key]


def choose_version(request_key: str, config: ServingConfig) -> tuple[Any, str]:
    """The model version that answers this request, and its arm."""
    from rl.deploy.registry import RegistryError, find_version, live_version

    from rl.deploy.ab import candidate_arm

    live = live_version()
    if config.ab_share > 0 and route(request_key, config.ab_share) == CANDIDATE:
        try:
            candidate = find_version(config.ab_candidate)
        except RegistryError as exc:
            logger.warning("A/B candidate %r is not a known model version (%s); serving the live model", config.ab_candidate, exc)
        else:
            if candidate.status in ("registered", "active"):
                return candidate, CANDIDATE if live is None or candidate.pk != live.pk else LIVE
            logger.warning("A/B candidate %s is %s, not registered with the engine; serving the live model", candidate.ollama_name, candidate.status)
    elif config.ab_share == 0 and live is not None:  # no A/B in the settings: the online learner's arm, if one runs
        arm = candidate_arm()
        if arm is not None and route(request_key, arm.ab_share) == CANDIDATE:
            return arm, CANDIDATE
    if live is None:
        raise NoLiveModel("No model is live: activate one with `manage.py activate_model NAME` (or let online_learn deploy one).")
    return live, LIVE


@dataclass(frozen=True)
class Answer:
    pick: Pick
    raw_output: str
    seconds: float
    confidence: float | None = None


def ask_pick(text: ScenarioText, model: str, *, config: ServingConfig | None = None, host: str | None = None,
             catalog: Catalog | None = None) -> Answer:
    """Ask `model` for the pick that answers `text` through the serving engine (at `host`, or the configured one), under
    the answer schema, and parse it. Stores nothing. Raises a ServingError when the model does not answer with a usable pick."""
    config = config or serving_config()
    catalog = catalog or current_catalog()
    started = time.perf_counter()
    reply = chat_backend(config, host).ask(model, build_messages(text, catalog), answer_schema(text, catalog))
    seconds, raw = time.perf_counter() - started, reply.text
    try:
        return Answer(parse_pick(raw, catalog), raw, seconds, reply.confidence)
    except PickParseError as exc:
        raise UnusableAnswer(f"{model} answered something that is not a pick ({exc.reason}): {exc}", model_version=model) from exc


def store_pick(scenario: Any, answer: Answer, *, entry_id: str, model_version: str) -> Any:
    """The answer as a production Entry of `scenario` (saved first when it is new), in one transaction."""
    from feedback.models import Entry, Fixture, Widget
    from feedback.services import entry_create

    pick = answer.pick
    with transaction.atomic():
        if scenario.pk is None:
            scenario.external_id = scenario.external_id or f"asked-{uuid.uuid4().hex}"
            scenario.save()
        return entry_create(external_id=entry_id, scenario=scenario, widget=Widget.objects.get(slug=pick.widget),
                            fixtures=Fixture.objects.filter(slug__in=pick.fixtures), title=pick.title[:200],
                            raw_output=answer.raw_output, source=Entry.Source.PRODUCTION, model_version=model_version,
                            confidence=answer.confidence)


def pick_widget(scenario: Any, *, request_key: str | None = None, config: ServingConfig | None = None, host: str | None = None) -> ServedPick:
    """Ask the serving model for `scenario`'s pick (a feedback Scenario; saved with the entry when it is new) and store
    the answer as an Entry. Raises a ServingError, with nothing stored, when no model answers with a usable pick."""
    config = config or serving_config()
    entry_id = f"pick-{uuid.uuid4().hex}"
    try:
        version, arm = choose_version(request_key or entry_id, config)
        text = ScenarioText(scenario.query, scenario.site, scenario.role, scenario.time_range)
        answer = ask_pick(text, version.ollama_name, config=config, host=host)
    except ServingError as exc:
        SERVING_ERRORS.labels(code=exc.code).inc()
        raise
    entry = store_pick(scenario, answer, entry_id=entry_id, model_version=version.ollama_name)
    PICKS_SERVED.labels(model_version=version.ollama_name, arm=arm).inc()
    PICK_SECONDS.labels(arm=arm).observe(answer.seconds)
    logger.info("Served %s for %r: %s %s (%s, %s arm, %.2f s)", entry.external_id, scenario.query[:60], answer.pick.widget,
                list(answer.pick.fixtures), version.ollama_name, arm, answer.seconds)
    return ServedPick(entry, answer.pick, version.ollama_name, arm, answer.raw_output, answer.seconds)
