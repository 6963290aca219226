"""Training prompts whose shortlist lists the chosen answer's fixtures first (docs/training-recipe.md, round nineteen).

The retriever ranks a question's fixtures; the ratings say which of them answer it. Listed so, the training prompts
teach the model that the shortlist's first fixtures are the answer (a scatter plot's first two), and the ratings
teach it the widget and how many fixtures to take: the fixture choice itself is left to the retriever, whose order a
135M model overrules wrongly more often than rightly on questions phrased unlike its training (rounds nine, ten and
fourteen). The rest of the shortlist keeps the retriever's order, every answer of a scenario (chosen and rejected)
is written in the new order, and a scenario's pairs share one prompt. The held-out split keeps the retriever's order.

Such a run ranks with BM25 alone (`lexical_snapshot`), and its model is asked with BM25 and word embeddings: every
run trained on the embeddings' lists lost widget accuracy against the same seed on BM25's (four of four, rounds
seventeen and nineteen), while with the chosen fixtures first the model keeps whichever order it is asked with.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from rl.core.prompts import Catalog, ScenarioText, build_messages, parse_pick, render_pick
from rl.data.snapshot import FeedbackSnapshot


def lexical_snapshot(snapshot: FeedbackSnapshot) -> FeedbackSnapshot:
    """`snapshot` whose catalog ranks shortlists with BM25 alone (RL_SHORTLIST_DENSE_WEIGHT 0), for every prompt of
    the training run: its pairs, its held-out split and its pick checks."""
    return dataclasses.replace(snapshot, catalog=dataclasses.replace(snapshot.catalog, dense_weight=0.0))


def chosen_first(shortlist: Sequence[str], chosen: set[str]) -> list[str]:
    """`shortlist` with the `chosen` fixtures it holds moved to the front, each part in its own order."""
    return [slug for slug in shortlist if slug in chosen] + [slug for slug in shortlist if slug not in chosen]


def with_chosen_fixtures_first(rows: list[dict], scenarios: Mapping[str, ScenarioText], catalog: Catalog) -> list[dict]:
    """Pair rows whose prompts list their scenario's chosen fixtures first (every chosen answer of the scenario's
    pairs, usually one) and whose answers follow that order."""
    chosen_by_scenario: dict[str, set[str]] = {}
    for row in rows:
        chosen_by_scenario.setdefault(row["scenario_id"], set()).update(parse_pick(row["chosen"][0]["content"], catalog).fixtures)
    out = []
    for row in rows:
        scenario = scenarios[row["scenario_id"]]
        shortlist = chosen_first(catalog.shortlist_for(scenario), chosen_by_scenario[row["scenario_id"]])

        def rewritten(messages: list[dict[str, str]]) -> list[dict[str, str]]:
            return [{**messages[0], "content": render_pick(parse_pick(messages[0]["content"], catalog), shortlist)}]

        out.append({**row, "prompt": build_messages(scenario, catalog, shortlist),
                    "chosen": rewritten(row["chosen"]), "rejected": rewritten(row["rejected"])})
    return out
