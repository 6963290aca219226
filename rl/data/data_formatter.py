"""Rated entries -> preference pairs (DPO) and unpaired rows (KTO), in TRL's conversational format.

Rules (each has a test in tests/test_data_formatter.py):
- Each entry gets one verdict from its usable ratings: the majority of up and down; a tie drops the entry.
  A rating is unusable when tagged `low_confidence` or given by an untrusted rater.
- Widget pair: an up and a down entry of the SAME scenario whose widgets differ.
- Fixture pair: an up and a down entry of the same scenario and widget whose fixtures differ.
- Correction pair: a rating's corrected pick is chosen, the entry it rated is rejected.
- With `chosen_agrees_with_corrections`, where a rating in the scenario carries a corrected pick, only the up-rated
  entries showing a corrected pick are chosen (when any does): an up the raters' own corrections contradict is more
  likely a slip than a second right answer.
- Per scenario and kind at most `max_pairs_per_scenario` pairs, spread so no entry dominates. With
  `hard_widget_negatives`, a widget pair's rejected widget is, among those equally spread, the one most often
  up-rated elsewhere with the chosen pick's fixtures: the widget the same data could have been shown with, which
  only the question's wording rules out (a trend against a current value of one sensor), not one the data already
  excludes (an alarm list of a temperature). With `hard_fixture_negatives`, a fixture pair's rejected pick is, among
  those equally spread, the one whose written answer departs from the chosen one latest: the same first fixtures and
  then one fewer (a scatter plot of one of its two measurements), which teaches the decision the model makes after
  writing its first fixture (whether to go on), not only which fixture comes first. With `offered_fixture_negatives`,
  a fixture pair's rejected pick is, among those equally spread (and after the latest departure where both apply), one
  whose fixtures the prompt's shortlist offers, the highest ranked first: the competitor the model could write, not a
  source the answer schema already rules out. With `balanced_widget_negatives`, a widget pair's rejected widget is,
  among those equally spread (and after `hard_widget_negatives`' rule), the one so far chosen most often more than
  rejected (the correction pairs counted first): DPO pushes a pair's chosen widget up and its rejected widget down, and
  pushes that do not even out per widget shift the model's prior over widgets.
- Exact duplicate pairs, pairs whose chosen equals rejected, and pairs whose chosen fixtures are not offered by the
  prompt's fixture shortlist are dropped and counted.
- Entries with a verdict that appear in no pair become KTO rows {prompt, completion, label}.
"""
from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from feedback.validation import LOW_CONFIDENCE_TAG, rating_is_usable
from rl.core.prompts import Catalog, Pick, ScenarioText, assistant_message, build_messages, fixtures_in_answer_order

DEFAULT_MAX_PAIRS_PER_SCENARIO = 4


@dataclass(frozen=True)
class Vote:
    """One rating of an entry, as the formatter needs it."""

    rater: str
    value: str
    created_at: datetime
    tags: tuple[str, ...] = ()
    trusted: bool = True
    corrected: Pick | None = None
    updated_at: datetime | None = None  # when the rater last changed it; None: never (files carry only created_at)

    @property
    def changed_at(self) -> datetime:
        return self.updated_at or self.created_at

    @property
    def usable(self) -> bool:
        return rating_is_usable(trusted=self.trusted, tags=self.tags)


@dataclass(frozen=True)
class RatedEntry:
    entry_id: str
    scenario_id: str
    pick: Pick
    votes: tuple[Vote, ...]


@dataclass
class WidgetPush:
    """Each widget's times chosen minus times rejected in widget pairs (`balanced_widget_negatives`), counted apart for
    each group of scenarios `group_of` names (the training and the held-out split: the pushes that must even out are
    those trained on)."""

    group_of: Callable[[str], Hashable] = lambda scenario_id: None
    counts: dict[Hashable, Counter] = field(default_factory=lambda: defaultdict(Counter))

    def of(self, scenario_id: str, widget: str) -> int:
        return self.counts[self.group_of(scenario_id)][widget]

    def add(self, scenario_id: str, chosen: str, rejected: str) -> None:
        counts = self.counts[self.group_of(scenario_id)]
        counts[chosen] += 1
        counts[rejected] -= 1

    def add_rows(self, rows: Iterable[dict]) -> None:
        """Count the widget pairs among `rows`, each distinct pair once (duplicates are dropped from training)."""
        seen = set()
        for row in rows:
            key = (row["scenario_id"], row["chosen"][0]["content"], row["rejected"][0]["content"])
            if row["kind"] == "widget" and key not in seen:
                seen.add(key)
                self.add(row["scenario_id"], json.loads(row["chosen"][0]["content"])["widget"],
                         json.loads(row["rejected"][0]["content"])["widget"])


@dataclass
class FormatterStats:
    verdicts: Counter = field(default_factory=Counter)  # up / down
    filtered: Counter = field(default_factory=Counter)  # reason -> count
    conflicts_resolved: int = 0
    pairs: Counter = field(default_factory=Counter)  # kind -> count
    correction_pairs: int = 0


@dataclass
class FormattedPreferences:
    pairs: list[dict]
    kto_rows: list[dict]
    stats: FormatterStats


def entry_verdicts(entries: Iterable[RatedEntry], stats: FormatterStats | None = None) -> dict[str, str]:
    """Majority verdict per entry from its usable ratings; ties are dropped."""
    stats = stats if stats is not None else FormatterStats()
    verdicts: dict[str, str] = {}
    for entry in entries:
        for vote in entry.votes:
            if not vote.trusted:
                stats.filtered["untrusted_rater"] += 1
            elif LOW_CONFIDENCE_TAG in vote.tags:
                stats.filtered["low_confidence"] += 1
        counts = Counter(vote.value for vote in entry.votes if vote.usable)
        if not counts:
            continue
        if counts["up"] == counts["down"]:
            stats.filtered["conflict_tie"] += 1
            continue
        if counts["up"] and counts["down"]:
            stats.conflicts_resolved += 1
        verdict = "up" if counts["up"] > counts["down"] else "down"
        stats.verdicts[verdict] += 1
        verdicts[entry.entry_id] = verdict
    return verdicts


def _balanced(
    candidates: list[tuple[RatedEntry, RatedEntry]], cap: int, rng: random.Random,
    hardness: Callable[[tuple[RatedEntry, RatedEntry]], float] = lambda combo: 0.0,
) -> list[tuple[RatedEntry, RatedEntry]]:
    """Up to `cap` of the (chosen, rejected) candidates, each time taking the one whose entries were used least, and
    among those the hardest."""
    combos = list(candidates)
    rng.shuffle(combos)
    used: Counter = Counter()
    picked = []
    while combos and len(picked) < cap:
        best = min(range(len(combos)), key=lambda i: (max(used[combos[i][0].entry_id], used[combos[i][1].entry_id]),
                                                      used[combos[i][0].entry_id] + used[combos[i][1].entry_id],
                                                      -hardness(combos[i])))
        good, bad = combos.pop(best)
        used[good.entry_id] += 1
        used[bad.entry_id] += 1
        picked.append((good, bad))
    return picked


def _row(scenario_id: str, scenario: ScenarioText, catalog: Catalog, chosen: Pick, rejected: Pick, kind: str, origin: str) -> dict:
    return {
        "prompt": build_messages(scenario, catalog),
        "chosen": assistant_message(chosen, scenario, catalog),
        "rejected": assistant_message(rejected, scenario, catalog),
        "kind": kind,
        "origin": origin,
        "scenario_id": scenario_id,
    }


def widget_fixture_counts(entries: Iterable[RatedEntry], verdicts: Mapping[str, str]) -> Counter:
    """(fixture, widget) -> in how many scenarios an up-rated pick shows that fixture with that widget."""
    shown = {(entry.scenario_id, fixture, entry.pick.widget) for entry in entries if verdicts.get(entry.entry_id) == "up"
             for fixture in entry.pick.fixtures}
    return Counter((fixture, widget) for _scenario, fixture, widget in shown)


def corrected_picks(entries: Iterable[RatedEntry]) -> set[tuple[str, tuple[str, ...]]]:
    """The (widget, fixtures) that the usable ratings of `entries` name as the right pick in their corrections."""
    return {(vote.corrected.widget, vote.corrected.fixtures) for entry in entries for vote in entry.votes
            if vote.usable and vote.corrected is not None}


def ups_agreeing_with_corrections(ups: list[RatedEntry], corrected: set[tuple[str, tuple[str, ...]]]) -> list[RatedEntry]:
    """The up-rated entries that show a pick the scenario's corrections name; all of them when none does (or there
    is no correction)."""
    agreeing = [entry for entry in ups if (entry.pick.widget, entry.pick.fixtures) in corrected]
    return agreeing or ups


def can_reject(kind: str, chosen: Pick, rejected: Pick) -> bool:
    """Whether `rejected` may stand against `chosen` in a pair of `kind`: another widget in a widget pair, the same
    widget with other fixtures in a fixture pair."""
    if kind == "widget":
        return chosen.widget != rejected.widget
    return chosen.widget == rejected.widget and chosen.fixtures != rejected.fixtures


def shared_leading_fixtures(chosen: Pick, rejected: Pick, shortlist: list[str]) -> int:
    """How many fixtures the two picks' written answers share before they part (both in the shortlist's order)."""
    written = zip(fixtures_in_answer_order(chosen.fixtures, shortlist), fixtures_in_answer_order(rejected.fixtures, shortlist))
    return sum(1 for _ in itertools.takewhile(lambda both: both[0] == both[1], written))


def offered_competitor_rank(chosen: Pick, rejected: Pick, shortlist: list[str]) -> float:
    """How near the top of the prompt's shortlist the fixtures that `rejected` shows and `chosen` does not stand: 1 for
    the best match (or none of its own, a pick of fewer fixtures), down to 1/len(shortlist) for the last offered, and 0
    when one is not offered at all (a pick that decoding under the answer schema can never write)."""
    own = [fixture for fixture in rejected.fixtures if fixture not in chosen.fixtures]
    if any(fixture not in shortlist for fixture in own):
        return 0.0
    return 1.0 - max((shortlist.index(fixture) for fixture in own), default=0) / len(shortlist)


def _pairs_of_kind(
    kind: str,
    entries: list[RatedEntry],
    all_scenarios: Mapping[str, ScenarioText],
    catalog: Catalog,
    verdicts: Mapping[str, str],
    max_pairs_per_scenario: int,
    seed: int,
    hard_negatives: bool = False,
    agree_with_corrections: bool = False,
    stats: FormatterStats | None = None,
    offered_negatives: bool = False,
    widget_push: WidgetPush | None = None,
) -> list[dict]:
    """`widget_push` (widget pairs only), updated here: when given, the rejected widget evens it out
    (`balanced_widget_negatives`)."""
    rng = random.Random(seed)
    if kind == "fixture" and (hard_negatives or offered_negatives):
        def hardness(combo: tuple[RatedEntry, RatedEntry]) -> float:
            # Whole shared fixtures first; the offered rank, below 1, only orders picks that depart equally late.
            good, bad = combo
            shortlist = catalog.shortlist_for(all_scenarios[good.scenario_id])
            leading = shared_leading_fixtures(good.pick, bad.pick, shortlist) if hard_negatives else 0
            return leading + (0.5 * offered_competitor_rank(good.pick, bad.pick, shortlist) if offered_negatives else 0.0)
    elif not hard_negatives:
        def hardness(combo: tuple[RatedEntry, RatedEntry]) -> float:
            return 0.0
    else:
        shown_with = widget_fixture_counts(entries, verdicts)

        def hardness(combo: tuple[RatedEntry, RatedEntry]) -> float:
            good, bad = combo
            return sum(shown_with[(fixture, bad.pick.widget)] for fixture in good.pick.fixtures)
    if kind == "widget" and widget_push is not None:
        rule = hardness

        def hardness(combo: tuple[RatedEntry, RatedEntry]) -> float:
            # The hard-negative rule counts in whole numbers; the push, squashed into (-1, 1) keeping its order, only
            # orders the candidates that rule ranks equally, however large either grows.
            push = widget_push.of(combo[1].scenario_id, combo[1].pick.widget)
            return rule(combo) + push / (1 + abs(push))

    by_scenario: dict[str, list[RatedEntry]] = {}
    for entry in entries:
        if entry.entry_id in verdicts:
            by_scenario.setdefault(entry.scenario_id, []).append(entry)
    rows = []
    for scenario_id in sorted(by_scenario):
        group = sorted(by_scenario[scenario_id], key=lambda e: e.entry_id)
        ups = [e for e in group if verdicts[e.entry_id] == "up"]
        downs = [e for e in group if verdicts[e.entry_id] == "down"]
        if agree_with_corrections:
            agreeing = ups_agreeing_with_corrections(ups, corrected_picks(by_scenario[scenario_id]))
            if stats is not None:
                stats.filtered[f"{kind}_up_contradicted_by_correction"] += len(ups) - len(agreeing)
            ups = agreeing
        candidates = [(u, d) for u in ups for d in downs if can_reject(kind, u.pick, d.pick)]
        for good, bad in _balanced(candidates, max_pairs_per_scenario, rng, hardness):
            if kind == "widget" and widget_push is not None:
                widget_push.add(scenario_id, good.pick.widget, bad.pick.widget)
            rows.append(_row(scenario_id, all_scenarios[scenario_id], catalog, good.pick, bad.pick, kind, "ratings"))
    return rows


def build_widget_dpo_pairs(
    entries: list[RatedEntry],
    all_scenarios: Mapping[str, ScenarioText],
    catalog: Catalog,
    *,
    verdicts: Mapping[str, str] | None = None,
    max_pairs_per_scenario: int = DEFAULT_MAX_PAIRS_PER_SCENARIO,
    seed: int = 0,
    hard_negatives: bool = False,
    agree_with_corrections: bool = False,
    stats: FormatterStats | None = None,
    widget_push: WidgetPush | None = None,
) -> list[dict]:
    """Pairs of an up-rated and a down-rated pick with different widgets, within one scenario; with `hard_negatives`
    the rejected widgets are preferably those the chosen fixtures are often shown with elsewhere; with
    `agree_with_corrections` the chosen is an up-rated pick the scenario's corrections name, where one is; with
    `widget_push` (updated here) the rejected widgets even it out."""
    verdicts = verdicts if verdicts is not None else entry_verdicts(entries)
    return _pairs_of_kind("widget", entries, all_scenarios, catalog, verdicts, max_pairs_per_scenario, seed, hard_negatives,
                          agree_with_corrections, stats, widget_push=widget_push)


def build_fixture_dpo_pairs(
    entries: list[RatedEntry],
    all_scenarios: Mapping[str, ScenarioText],
    catalog: Catalog,
    *,
    verdicts: Mapping[str, str] | None = None,
    max_pairs_per_scenario: int = DEFAULT_MAX_PAIRS_PER_SCENARIO,
    seed: int = 0,
    hard_negatives: bool = False,
    agree_with_corrections: bool = False,
    stats: FormatterStats | None = None,
    offered_negatives: bool = False,
) -> list[dict]:
    """Pairs of the right data source against a wrong one: same scenario and widget, different fixtures; with
    `hard_negatives` the rejected picks are preferably those whose written answer parts from the chosen one latest,
    with `offered_negatives` those the prompt's shortlist offers, best ranked first.

    The prompt lists the fixture shortlist with descriptions, so the model sees what each source is.
    """
    verdicts = verdicts if verdicts is not None else entry_verdicts(entries)
    return _pairs_of_kind("fixture", entries, all_scenarios, catalog, verdicts, max_pairs_per_scenario, seed, hard_negatives,
                          agree_with_corrections, stats, offered_negatives)


def build_correction_pairs(entries: list[RatedEntry], all_scenarios: Mapping[str, ScenarioText], catalog: Catalog) -> list[dict]:
    """A usable rating's corrected pick is chosen over the entry it rated."""
    rows = []
    for entry in sorted(entries, key=lambda e: e.entry_id):
        for vote in entry.votes:
            if vote.usable and vote.corrected is not None:
                corrected = Pick(vote.corrected.widget, vote.corrected.fixtures, vote.corrected.title or entry.pick.title)
                kind = "widget" if corrected.widget != entry.pick.widget else "fixture"
                rows.append(_row(entry.scenario_id, all_scenarios[entry.scenario_id], catalog, corrected, entry.pick, kind, "correction"))
    return rows


def _chosen_is_offered(row: dict, catalog: Catalog, all_scenarios: Mapping[str, ScenarioText]) -> bool:
    chosen = json.loads(row["chosen"][0]["content"])
    return set(chosen["fixtures"]) <= set(catalog.shortlist_for(all_scenarios[row["scenario_id"]]))


def follows_retriever(answer: str, shortlist: list[str]) -> bool:
    """Whether a written answer's first fixture is the prompt's shortlist's first: the retriever's best match, which
    an answer that overrules the retriever leaves. A second fixture (a scatter plot's) may be any: requiring the top
    two would drop half of the demo's scatter plots, whose second measurement the retriever ranks anywhere."""
    return fixtures_in_answer_order(json.loads(answer)["fixtures"], shortlist)[:1] == list(shortlist[:1])


def format_preferences(
    entries: list[RatedEntry],
    all_scenarios: Mapping[str, ScenarioText],
    catalog: Catalog,
    *,
    kind: str = "both",
    max_pairs_per_scenario: int = DEFAULT_MAX_PAIRS_PER_SCENARIO,
    seed: int = 0,
    hard_widget_negatives: bool = False,
    hard_fixture_negatives: bool = False,
    chosen_agrees_with_corrections: bool = False,
    offered_fixture_negatives: bool = False,
    balanced_widget_negatives: bool = False,
    balance_group: Callable[[str], Hashable] | None = None,
) -> FormattedPreferences:
    """All the rules above, applied in order: verdicts, pairs of each kind, corrections, filters, KTO rows.

    `balance_group` names each scenario's group for `balanced_widget_negatives` (the split it will be in); none: one."""
    stats = FormatterStats()
    verdicts = entry_verdicts(entries, stats)
    corrections = [row for row in build_correction_pairs(entries, all_scenarios, catalog) if kind in ("both", row["kind"])]
    candidates: list[dict] = []
    if kind in ("widget", "both"):
        widget_push = None
        if balanced_widget_negatives:
            widget_push = WidgetPush(balance_group) if balance_group else WidgetPush()
            widget_push.add_rows(corrections)
        candidates += build_widget_dpo_pairs(entries, all_scenarios, catalog, verdicts=verdicts,
                                             max_pairs_per_scenario=max_pairs_per_scenario, seed=seed,
                                             hard_negatives=hard_widget_negatives,
                                             agree_with_corrections=chosen_agrees_with_corrections, stats=stats,
                                             widget_push=widget_push)
    if kind in ("fixture", "both"):
        candidates += build_fixture_dpo_pairs(entries, all_scenarios, catalog, verdicts=verdicts,
                                              max_pairs_per_scenario=max_pairs_per_scenario, seed=seed,
                                              hard_negatives=hard_fixture_negatives,
                                              agree_with_corrections=chosen_agrees_with_corrections, stats=stats,
                                              offered_negatives=offered_fixture_negatives)
    candidates += corrections

    pairs, seen = [], set()
    for row in candidates:
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        key = (row["scenario_id"], chosen, rejected)
        if Pick(**json.loads(chosen)).same_choice(Pick(**json.loads(rejected))):
            stats.filtered["chosen_equals_rejected"] += 1
        elif key in seen:
            stats.filtered["duplicate_pair"] += 1
        elif not _chosen_is_offered(row, catalog, all_scenarios):
            stats.filtered["chosen_outside_shortlist"] += 1
        else:
            seen.add(key)
            pairs.append(row)
            stats.pairs[row["kind"]] += 1
            stats.correction_pairs += row["origin"] == "correction"

    paired_picks = {(row["scenario_id"], row[side][0]["content"]) for row in pairs for side in ("chosen", "rejected")}
    kto_rows = []
    for entry in sorted(entries, key=lambda e: e.entry_id):
        if entry.entry_id not in verdicts:
            continue
        scenario = all_scenarios[entry.scenario_id]
        completion = assistant_message(entry.pick, scenario, catalog)
        if (entry.scenario_id, completion[0]["content"]) not in paired_picks:
            kto_rows.append({"prompt": build_messages(scenario, catalog), "completion": completion,
                             "label": verdicts[entry.entry_id] == "up", "scenario_id": entry.scenario_id})
    return FormattedPreferences(pairs=pairs, kto_rows=kto_rows, stats=stats)
