"""A feedback source (`db` or `file`) -> train and eval splits of preference pairs, with stats.

The split is BY SCENARIO: every pair of a scenario lands on the same side, so no question leaks from train to eval.
"""
from __future__ import annotations

import hashlib
import logging
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rl.core.config import TrainingConfig
from rl.core.prompts import build_messages
from rl.data.data_formatter import DEFAULT_MAX_PAIRS_PER_SCENARIO, FormattedPreferences, follows_retriever, format_preferences
from rl.data.chosen_first import lexical_snapshot, with_chosen_fixtures_first
from rl.data.question_dropout import with_question_words_dropped
from rl.data.selection import rated_since, select_scenarios, spread_over_scenarios
from rl.data.snapshot import DatasetError, FeedbackSnapshot, load_snapshot

logger = logging.getLogger(__name__)


DEFAULT_MIN_SAMPLES = 50
DEFAULT_EVAL_FRACTION = 0.2
SOURCES = ("db", "file")
KINDS = ("widget", "fixture", "both")


class InsufficientDataError(DatasetError):
    pass


@dataclass
class DatasetStats:
    source: str
    rated_entries: int = 0
    ratings: int = 0
    pairs_by_kind: dict[str, int] = field(default_factory=dict)
    correction_pairs: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    train_scenarios: int = 0
    eval_scenarios: int = 0
    scenario_overlap: int = 0
    kto_rows: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    conflicts_resolved: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    shortlist_recall: float | None = None
    shortlist_recall_majority: float | None = None
    prompt_tokens: dict[str, float] | None = None
    newest_rating_at: str | None = None
    policy_rejected: dict[str, int] = field(default_factory=dict)  # kind -> training pairs whose rejected answer policy_negatives changed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> list[tuple[str, str]]:
        rows = [
            ("source", self.source),
            ("rated entries / ratings", f"{self.rated_entries} / {self.ratings}"),
            ("verdicts up / down", f"{self.verdicts.get('up', 0)} / {self.verdicts.get('down', 0)}"),
            ("conflicting entries resolved by majority", str(self.conflicts_resolved)),
            ("widget pairs", str(self.pairs_by_kind.get("widget", 0))),
            ("fixture pairs", str(self.pairs_by_kind.get("fixture", 0))),
            ("  of which from corrections", str(self.correction_pairs)),
            ("train pairs / scenarios", f"{self.train_pairs} / {self.train_scenarios}"),
            ("eval pairs / scenarios", f"{self.eval_pairs} / {self.eval_scenarios}"),
            ("scenarios in both train and eval", str(self.scenario_overlap)),
            ("KTO rows (unpaired ratings)", str(self.kto_rows)),
        ]
        rows += [(f"filtered: {reason}", str(count)) for reason, count in sorted(self.filtered.items())]
        rows += [(f"rejected re-chosen by the adapter ({kind} pairs)", str(count)) for kind, count in sorted(self.policy_rejected.items())]
        if self.shortlist_recall is not None:
            rows.append(("fixture shortlist recall (up-rated picks)", f"{self.shortlist_recall:.1%}"))
        if self.shortlist_recall_majority is not None:
            rows.append(("fixture shortlist recall (majority-up picks)", f"{self.shortlist_recall_majority:.1%}"))
        if self.prompt_tokens:
            t = self.prompt_tokens
            rows.append(("prompt tokens min / median / max", f"{t['min']:.0f} / {t['median']:.0f} / {t['max']:.0f}"))
        if self.newest_rating_at:
            rows.append(("newest rating used", self.newest_rating_at))
        return rows


@dataclass
class PreparedDataset:
    dataset: Any  # datasets.DatasetDict: "train", "eval"
    kto_dataset: Any  # datasets.DatasetDict or None
    stats: DatasetStats
    snapshot: FeedbackSnapshot


def split_position(scenario_id: str, seed: int) -> float:
    """Where a scenario falls in [0, 1) for the train/eval split: the held-out share is the lowest."""
    return int(hashlib.sha256(f"{seed}:{scenario_id}".encode()).hexdigest()[:13], 16) / 16**13


def split_scenarios(scenario_ids: set[str], eval_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Scenarios for train and for eval; at least one of each when there are two or more.

    A scenario's side depends only on its id and the seed, never on which other scenarios exist, so it stays put as
    feedback grows: a retrain's held-out scenarios were not trained on by earlier runs with the same seed, which the
    deploy gate needs to compare a candidate with the live model fairly."""
    ordered = sorted(scenario_ids, key=lambda s: split_position(s, seed))
    n_eval = sum(split_position(s, seed) < eval_fraction for s in ordered)
    if eval_fraction > 0 and len(ordered) >= 2:
        n_eval = min(max(n_eval, 1), len(ordered) - 1)
    return set(ordered[n_eval:]), set(ordered[:n_eval])


def shortlist_recall(snapshot: FeedbackSnapshot, entry_ids: set[str] | None = None) -> float | None:
    """The share of up-rated picks (all up votes, or only `entry_ids`) whose fixtures are all in the prompt's shortlist."""
    hits = total = 0
    for entry in snapshot.entries:
        weight = sum(v.value == "up" for v in entry.votes) if entry_ids is None else int(entry.entry_id in entry_ids)
        if not weight:
            continue
        offered = set(snapshot.catalog.shortlist_for(snapshot.scenarios[entry.scenario_id]))
        total += weight
        hits += weight * (set(entry.pick.fixtures) <= offered)
    return hits / total if total else None


def prompt_token_lengths(prompts: Mapping[str, list[dict]] | list[list[dict]], tokenizer: Any) -> dict[str, float]:
    """min / median / max token count of prompts rendered by the tokenizer's chat template."""
    prompts = list(prompts.values()) if isinstance(prompts, Mapping) else prompts
    lengths = [
        len(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]) for p in prompts
    ]
    return {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)}


def prepare_training_dataset(
    source: str = "db",
    data_path: str | Path | None = None,
    ratings_path: str | Path | None = None,
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    seed: int = 42,
    split_seed: int | None = None,
    kind: str = "both",
    rater: str | None = None,
    max_pairs_per_scenario: int = DEFAULT_MAX_PAIRS_PER_SCENARIO,
    hard_widget_negatives: bool = False,
    hard_fixture_negatives: bool = False,
    chosen_agrees_with_corrections: bool = False,
    offered_fixture_negatives: bool = False,
    balanced_widget_negatives: bool = False,
    follow_retriever: bool = False,
    question_word_dropout: float = 0.0,
    chosen_fixtures_first: bool = False,
    lexical_ranking: bool = False,
    tokenizer: Any = None,
    until: datetime | str | None = None,
) -> PreparedDataset:
    """Build train and eval splits of preference pairs (and KTO rows) from ratings.

    With `follow_retriever` the training split keeps only the pairs (and up-rated KTO rows) whose chosen answer's first
    fixture is the shortlist's first; the held-out split keeps every pair, so its figures still count the questions the
    retriever ranks wrong. With `lexical_ranking` every prompt ranks its shortlist with BM25 alone. With
    `question_word_dropout` the training split's prompts ask their question with that share of its words left out
    (`rl.data.question_dropout`); the held-out split's are whole. With `chosen_fixtures_first` the training split's
    prompts list the chosen fixtures first (`rl.data.chosen_first`). `split_seed` draws the split
    (`seed` when None), so runs of different seeds can hold out the same questions. Raises InsufficientDataError
    when fewer than `min_samples` pairs come out.
    """
    from datasets import Dataset, DatasetDict

    if source not in SOURCES:
        raise DatasetError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
    if kind not in KINDS:
        raise DatasetError(f"Unknown kind {kind!r}: use one of {', '.join(KINDS)}.")
    if not 0 <= eval_fraction < 1:
        raise DatasetError(f"eval_fraction must be in [0, 1), got {eval_fraction}.")
    snapshot = load_snapshot(source, data_path, ratings_path, rater, until)
    if lexical_ranking:
        snapshot = lexical_snapshot(snapshot)
    split = seed if split_seed is None else split_seed

    formatted: FormattedPreferences = format_preferences(
        snapshot.entries, snapshot.scenarios, snapshot.catalog, kind=kind, max_pairs_per_scenario=max_pairs_per_scenario, seed=seed,
        hard_widget_negatives=hard_widget_negatives, hard_fixture_negatives=hard_fixture_negatives,
        chosen_agrees_with_corrections=chosen_agrees_with_corrections, offered_fixture_negatives=offered_fixture_negatives,
        balanced_widget_negatives=balanced_widget_negatives,
        balance_group=lambda scenario_id: split_position(scenario_id, split) < eval_fraction,
    )
    f = formatted.stats
    n_pairs = len(formatted.pairs)
    if n_pairs < min_samples:
        who = f" by rater {rater!r}" if rater else ""
        raise InsufficientDataError(
            f"Too few preference pairs to train: found {n_pairs} (widget {f.pairs['widget']}, fixture {f.pairs['fixture']}) "
            f"from {len(snapshot.entries)} rated entries{who}; need at least {min_samples}. "
            "Rate more entries (the compare view at /rate/ makes pairs fastest: an up and a down for the same question), "
            "import more with `manage.py import_feedback`, or lower --min-samples."
        )

    scenario_ids = {row["scenario_id"] for row in formatted.pairs} | {row["scenario_id"] for row in formatted.kto_rows}
    train_ids, eval_ids = split_scenarios(scenario_ids, eval_fraction, split)
    train = [row for row in formatted.pairs if row["scenario_id"] in train_ids]
    evaluation = [row for row in formatted.pairs if row["scenario_id"] in eval_ids]
    kto_train = [r for r in formatted.kto_rows if r["scenario_id"] in train_ids]
    if follow_retriever:
        def follows(row: dict, answer: str) -> bool:
            return follows_retriever(answer, snapshot.catalog.shortlist_for(snapshot.scenarios[row["scenario_id"]]))

        kept = [row for row in train if follows(row, row["chosen"][0]["content"])]
        kto_kept = [row for row in kto_train if not row["label"] or follows(row, row["completion"][0]["content"])]
        f.filtered["training_chosen_overrules_retriever"] = len(train) - len(kept) + len(kto_train) - len(kto_kept)
        train, kto_train = kept, kto_kept
    if chosen_fixtures_first:
        train = with_chosen_fixtures_first(train, snapshot.scenarios, snapshot.catalog)
    train = with_question_words_dropped(train, snapshot.scenarios, snapshot.catalog, question_word_dropout)
    kto_train = with_question_words_dropped(kto_train, snapshot.scenarios, snapshot.catalog, question_word_dropout)
    dataset = DatasetDict({"train": Dataset.from_list(train), "eval": Dataset.from_list(evaluation)})
    kto_dataset = None
    if formatted.kto_rows:
        kto_dataset = DatasetDict({
            "train": Dataset.from_list(kto_train),
            "eval": Dataset.from_list([r for r in formatted.kto_rows if r["scenario_id"] in eval_ids]),
        })

    majority_up = {e.entry_id for e in snapshot.entries if sum(v.value == "up" for v in e.votes if v.usable) > sum(v.value == "down" for v in e.votes if v.usable)}
    stats = DatasetStats(
        source=source if source == "db" else f"file ({data_path}, {ratings_path})",
        rated_entries=len(snapshot.entries),
        ratings=sum(len(e.votes) for e in snapshot.entries),
        pairs_by_kind=dict(f.pairs),
        correction_pairs=f.correction_pairs,
        train_pairs=len(train), eval_pairs=len(evaluation),
        train_scenarios=len({r["scenario_id"] for r in train}), eval_scenarios=len({r["scenario_id"] for r in evaluation}),
        scenario_overlap=len({r["scenario_id"] for r in train} & {r["scenario_id"] for r in evaluation}),
        kto_rows=len(formatted.kto_rows),
        filtered=dict(f.filtered),
        conflicts_resolved=f.conflicts_resolved,
        verdicts=dict(f.verdicts),
        shortlist_recall=shortlist_recall(snapshot),
        shortlist_recall_majority=shortlist_recall(snapshot, majority_up),
        newest_rating_at=snapshot.newest_rating_at.isoformat() if snapshot.newest_rating_at else None,
    )
    if tokenizer is not None:
        prompts = {s: build_messages(snapshot.scenarios[s], snapshot.catalog) for s in sorted(scenario_ids)}
        stats.prompt_tokens = prompt_token_lengths(prompts, tokenizer)
    logger.info("Dataset: %d train / %d eval pairs, %d KTO rows", len(train), len(evaluation), len(formatted.kto_rows))
    return PreparedDataset(dataset=dataset, kto_dataset=kto_dataset, stats=stats, snapshot=snapshot)


def build_dataset(config: TrainingConfig, data: dict[str, Any], tokenizer: Any = None, *, for_training: bool = False) -> PreparedDataset:
    """The run's pairs as `config` builds them. `for_training`: as the training job sees them, ranked with BM25 alone
    when the run lists the chosen fixtures first (`rl.data.chosen_first`); evaluation asks as serving does."""
    prepared = prepare_training_dataset(
        data["source"], data.get("data_path"), data.get("ratings_path"),
        min_samples=config.min_samples, eval_fraction=config.eval_fraction, seed=config.seed,
        split_seed=config.held_out_seed, kind=config.kind,
        rater=data.get("rater"), max_pairs_per_scenario=config.max_pairs_per_scenario,
        hard_widget_negatives=config.hard_widget_negatives, hard_fixture_negatives=config.hard_fixture_negatives,
        chosen_agrees_with_corrections=config.chosen_agrees_with_corrections,
        offered_fixture_negatives=config.offered_fixture_negatives,
        balanced_widget_negatives=config.balanced_widget_negatives, follow_retriever=config.follow_retriever,
        question_word_dropout=config.question_word_dropout, chosen_fixtures_first=config.chosen_fixtures_first,
        lexical_ranking=for_training and config.chosen_fixtures_first, tokenizer=tokenizer,
        until=data.get("until"),
    )
    if config.max_train_scenarios or config.balance_widgets:
        paired = set(prepared.dataset["train"]["scenario_id"])
        prepared.dataset["train"] = select_scenarios(prepared.dataset["train"], config.max_train_scenarios, config.seed,
                                                     config.balance_widgets, first=rated_since(prepared.snapshot, data.get("rated_since")))
        if prepared.kto_dataset is not None:
            # The selection is among scenarios with pairs; scenarios rated only with single thumbs all stay.
            keep = set(prepared.dataset["train"]["scenario_id"])
            prepared.kto_dataset["train"] = prepared.kto_dataset["train"].filter(
                lambda row: row["scenario_id"] in keep or row["scenario_id"] not in paired, desc="Selecting unpaired ratings")
        prepared.stats.train_pairs = len(prepared.dataset["train"])
        prepared.stats.train_scenarios = len(set(prepared.dataset["train"]["scenario_id"]))
    if config.max_train_pairs and len(prepared.dataset["train"]) > config.max_train_pairs:
        prepared.dataset["train"] = spread_over_scenarios(prepared.dataset["train"], config.max_train_pairs, config.seed)
        prepared.stats.train_pairs = len(prepared.dataset["train"])
    return prepared
