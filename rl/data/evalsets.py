"""The natural-question evaluation set: hand-written operator questions, kept apart from the demo generator.

It has two parts, split by question, each a folder under `evalsets/`: the **gate** part (`evalsets/natural/`, this
module's NATURAL_* files), which deploy gates may score, and the **sealed** part (its folder is named in
rl/data/sealed.py alone), which only `evaluate_model --natural sealed` and the demo's report read.

A part's `questions.json` is the hand-written source (question, site, right widgets, right fixtures, and fixtures the
demo catalog does not have). This module turns it into the feedback file format, so `evaluate_model --data-file ...
--ratings-file ...` and the demo read it like any other feedback: every right widget with the right fixtures is rated
up, and for pairs, three wrong widgets and one wrong fixture from the prompt's shortlist are rated down. Regenerate
every part's two files after editing questions:

    python -m rl.data.evalsets
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from feedback.demo import FIXTURES, WIDGETS
from feedback.files import (
    EntryRecord, FeedbackData, FeedbackRatings, FixtureRecord, RaterRecord, RatingRecord, ScenarioRecord, WidgetRecord,
    write_json,
)
from rl.core.prompts import Catalog, CatalogItem, ScenarioText

EVALSETS_DIR = Path(__file__).resolve().parents[2] / "evalsets"
QUESTIONS_FILE, DATA_FILE, RATINGS_FILE = "questions.json", "exhaustive_data.json", "ratings.json"
NATURAL_DIR = EVALSETS_DIR / "natural"  # the gate part
NATURAL_QUESTIONS = NATURAL_DIR / QUESTIONS_FILE
NATURAL_DATA_FILE = NATURAL_DIR / DATA_FILE
NATURAL_RATINGS_FILE = NATURAL_DIR / RATINGS_FILE
WRONG_WIDGETS_PER_QUESTION = 3


def load_questions(path: Path = NATURAL_QUESTIONS) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def build_natural_evalset(spec: dict[str, Any] | None = None, seed: int = 0) -> tuple[FeedbackData, FeedbackRatings]:
    """The data file and ratings file of the natural set, from its hand-written questions."""
    spec = spec if spec is not None else load_questions()
    rng = random.Random(seed)
    fixtures = [FixtureRecord(slug=f.slug, name=f.name, description=f.description, sites=[f.site]) for f in FIXTURES]
    fixtures += [FixtureRecord(**f) for f in spec["extra_fixtures"]]
    catalog = Catalog(
        widgets=tuple(CatalogItem(s, n, d) for s, n, d in sorted(WIDGETS)),
        fixtures=tuple(CatalogItem(f.slug, f.name, f.description, tuple(f.sites)) for f in sorted(fixtures, key=lambda f: f.slug)),
        # The committed files' wrong-fixture picks were drawn from BM25's shortlists: the set stays the same data
        # whatever ranks the prompts' shortlists (RL_SHORTLIST_DENSE_WEIGHT).
        dense_weight=0.0,
    )
    widget_slugs = [w for w, _n, _d in WIDGETS]
    scenarios, entries, ratings = [], [], []
    start = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
    author = spec["author"]
    for question in spec["questions"]:
        scenario = ScenarioRecord(id=question["id"], query=question["query"], site=question["site"], role=question.get("role", ""),
                                  time_range=question.get("time_range", ""))
        scenarios.append(scenario)
        right = sorted(question["fixtures"])
        title = question.get("title") or question["query"][:60]
        verdicts: list[tuple[EntryRecord, str]] = []
        for widget in question["widgets"]:
            verdicts.append((EntryRecord(id=f"{scenario.id}-{widget}", scenario_id=scenario.id, widget=widget, fixtures=right,
                                         title=title, source="import"), "up"))
        wrong_widgets = rng.sample([w for w in widget_slugs if w not in question["widgets"]], WRONG_WIDGETS_PER_QUESTION)
        for widget in wrong_widgets:
            verdicts.append((EntryRecord(id=f"{scenario.id}-{widget}", scenario_id=scenario.id, widget=widget, fixtures=right,
                                         title=title, source="import"), "down"))
        shortlist = catalog.shortlist_for(ScenarioText(scenario.query, scenario.site))
        # In slug order, not the prompt's: the set's pairs do not change when the shortlist's display order does.
        others = [slug for slug in sorted(shortlist) if slug not in right]
        if others:
            wrong = sorted([others[0], *right[1:]])
            verdicts.append((EntryRecord(id=f"{scenario.id}-{question['widgets'][0]}-wrong-fixture", scenario_id=scenario.id,
                                         widget=question["widgets"][0], fixtures=wrong, title=title, source="import"), "down"))
        for entry, value in verdicts:
            entries.append(entry)
            ratings.append(RatingRecord(entry_id=entry.id, rating=value, rater=author, created_at=start + timedelta(minutes=len(ratings))))
    data = FeedbackData(
        widgets=[WidgetRecord(slug=s, name=n, description=d) for s, n, d in WIDGETS],
        fixtures=fixtures, scenarios=scenarios, entries=entries,
    )
    return data, FeedbackRatings(raters=[RaterRecord(username=author)], ratings=ratings)


def write_natural_evalset(directory: Path = NATURAL_DIR) -> tuple[Path, Path]:
    """Build a part's data and ratings files from its questions.json, in its folder."""
    data, ratings = build_natural_evalset(load_questions(directory / QUESTIONS_FILE))
    write_json(directory / DATA_FILE, data)
    write_json(directory / RATINGS_FILE, ratings)
    return directory / DATA_FILE, directory / RATINGS_FILE


if __name__ == "__main__":
    for questions in sorted(EVALSETS_DIR.glob(f"*/{QUESTIONS_FILE}")):
        for path in write_natural_evalset(questions.parent):
            print(f"wrote {path}")
