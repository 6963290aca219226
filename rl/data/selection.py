"""Which of the training split a run takes: at most N scenarios, round-robin over widgets, the newly rated first; and a
cap on pairs spread over scenarios.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Any


def rated_since(snapshot: Any, since: datetime | str | None) -> set[str]:
    """The scenarios with a rating given or changed after `since` (none when `since` is empty): what the online
    learner's buffer counted, which reads `updated_at`."""
    if not since:
        return set()
    since = datetime.fromisoformat(since) if isinstance(since, str) else since
    return {entry.scenario_id for entry in snapshot.entries if any(vote.changed_at > since for vote in entry.votes)}


def chosen_widget(row: dict[str, Any]) -> str:
    return json.loads(row["chosen"][0]["content"])["widget"]


def select_scenarios(dataset: Any, limit: int, seed: int, balance: bool, first: Collection[str] = ()) -> Any:
    """The pairs of at most `limit` scenarios (0: all). With `balance`, scenarios are taken round-robin over the widget
    their chosen answers name, so rare widgets are not crowded out by common ones. The scenarios in `first` (the
    online learner's newly rated ones) are taken before any other."""
    rng = random.Random(seed)
    widget_of: dict[str, Counter] = {}
    for row in dataset.select_columns(["scenario_id", "chosen"]):
        widget_of.setdefault(row["scenario_id"], Counter())[chosen_widget(row)] += 1

    def ordered(scenarios: list[str]) -> list[str]:
        rng.shuffle(scenarios)
        if not balance:
            return scenarios
        queues: dict[str, list[str]] = {}
        for scenario in scenarios:
            queues.setdefault(widget_of[scenario].most_common(1)[0][0], []).append(scenario)
        taken: list[str] = []
        while any(queues.values()):
            for widget in sorted(queues):
                if queues[widget]:
                    taken.append(queues[widget].pop())
        return taken

    first = set(first)
    scenarios = ordered(sorted(s for s in widget_of if s in first)) + ordered(sorted(s for s in widget_of if s not in first))
    keep = set(scenarios[: limit or None])
    return dataset.filter(lambda row: row["scenario_id"] in keep, desc="Selecting training scenarios")


def spread_over_scenarios(dataset: Any, limit: int, seed: int) -> Any:
    """At most `limit` rows, taken round-robin across scenarios so every scenario keeps some."""
    by_scenario: dict[str, list[int]] = {}
    for index, scenario in enumerate(dataset["scenario_id"]):
        by_scenario.setdefault(scenario, []).append(index)
    rng = random.Random(seed)
    queues = [rng.sample(rows, len(rows)) for _, rows in sorted(by_scenario.items())]
    picked: list[int] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop())
    return dataset.select(sorted(picked))
