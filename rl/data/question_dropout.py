"""Training prompts whose question leaves out a share of its words (word dropout, a regularizer against answering
from one keyword of the generator's phrasings; docs/training-recipe.md, round fourteen).

Which words go is drawn from a hash of the scenario, so a question is cut the same way in every pair and every run.
The fixture shortlist stays the one retrieved for the whole question (the retriever at serving time sees all of it),
and so does every answer, which is written in that shortlist's order.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Mapping

from rl.core.prompts import Catalog, ScenarioText, build_messages

# A question cut to fewer words than this is left whole: too little of it is left to say what was asked.
MIN_WORDS_KEPT = 3


def drop_question_words(query: str, share: float, key: str) -> str:
    """`query` without about `share` of its words, the same ones for the same `key`; unchanged when fewer than
    `MIN_WORDS_KEPT` words would be left or none would go."""
    rng = random.Random(hashlib.sha256(f"drop{key}".encode()).hexdigest())
    words = query.split()
    kept = [word for word in words if rng.random() >= share]
    return " ".join(kept) if MIN_WORDS_KEPT <= len(kept) < len(words) else query


def with_question_words_dropped(rows: list[dict], scenarios: Mapping[str, ScenarioText], catalog: Catalog, share: float) -> list[dict]:
    """Pair or KTO rows whose prompts ask their scenario's question with `share` of its words left out."""
    if not share:
        return rows
    out = []
    for row in rows:
        scenario = scenarios[row["scenario_id"]]
        cut = dataclasses.replace(scenario, query=drop_question_words(scenario.query, share, row["scenario_id"]))
        out.append({**row, "prompt": build_messages(cut, catalog, catalog.shortlist_for(scenario))})
    return out
