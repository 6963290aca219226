"""On-policy rejected answers: a warm-started round trains against the continued model's own likeliest mistakes.

The formatter pairs a question's up-rated pick with one of its down-rated picks chosen for balance (`_balanced`), so
most rejected answers are widgets the model already rules out. With `policy_negatives` each training pair's rejected
answer is instead, among the question's down-rated picks that the pair's kind allows (`can_reject`), the one the
adapter being continued (`init_adapter`) finds likeliest: iterative DPO, with the ratings as the judge of what the
model would answer.

Likeliest is read where the candidate first departs from the chosen answer: the answers of one question share their
tokens up to the decision they differ in (a widget pair's answers up to the widget, a fixture pair's up to a
fixture), so one forward pass over the prompt and the chosen answer gives, at that token, how likely the model is to
take each down-rated pick's path instead. What follows the first differing token (the rest of a widget's name, the
title) is not scored: the model's choice is made at that token.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from rl.core.config import TrainingConfig
from rl.core.prompts import Pick, assistant_message, parse_pick
from rl.data.data_formatter import RatedEntry, can_reject, entry_verdicts
from rl.data.dataset_builder import PreparedDataset
from rl.data.snapshot import FeedbackSnapshot
from rl.evaluation.evalset import answer_ids, tokenize_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Candidate:
    pick: Pick
    position: int  # index in the chosen answer's tokens where this candidate's tokens first differ
    token: int  # this candidate's token there


def _first_difference(chosen: tuple[int, ...], other: tuple[int, ...]) -> int:
    for index, (a, b) in enumerate(zip(chosen, other)):
        if a != b:
            return index
    return min(len(chosen), len(other))


def down_rated_by_scenario(snapshot: FeedbackSnapshot) -> dict[str, list[RatedEntry]]:
    verdicts = entry_verdicts(snapshot.entries)
    downs: dict[str, list[RatedEntry]] = defaultdict(list)
    for entry in sorted(snapshot.entries, key=lambda e: e.entry_id):
        if verdicts.get(entry.entry_id) == "down":
            downs[entry.scenario_id].append(entry)
    return downs


def _candidates(row: dict, downs: list[RatedEntry], snapshot: FeedbackSnapshot, tokenizer: Any) -> tuple[tuple[int, ...], list[_Candidate]]:
    """The row's prompt and chosen answer as tokens, and each down-rated pick it may reject with where it departs."""
    chosen = parse_pick(row["chosen"][0]["content"], snapshot.catalog)
    scenario = snapshot.scenarios[row["scenario_id"]]
    others = [entry.pick for entry in downs if can_reject(row["kind"], chosen, entry.pick)]
    if not others:
        return (), []
    prompt_ids = tokenize_prompt(tokenizer, row["prompt"])
    chosen_ids = answer_ids(tokenizer, row["prompt"], row["chosen"], prompt_ids)
    candidates = []
    for pick in others:
        other_ids = answer_ids(tokenizer, row["prompt"], assistant_message(pick, scenario, snapshot.catalog), prompt_ids)
        index = _first_difference(chosen_ids, other_ids)
        if index < len(other_ids):
            candidates.append(_Candidate(pick, len(prompt_ids) + index, other_ids[index]))
    sequence = tuple(prompt_ids) + chosen_ids
    return sequence, candidates


def _token_logps(model: Any, sequences: list[tuple[int, ...]], wanted: list[list[tuple[int, int]]], pad_id: int) -> list[list[float]]:
    """For each sequence, the log-probability of each (position, token) in `wanted`: the token at that position,
    given the sequence before it. Only those positions go through the output layer."""
    import torch

    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = causal_lm.device
    with torch.no_grad():
        hidden = causal_lm.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).last_hidden_state
        results = []
        for row, pairs in enumerate(wanted):
            positions = torch.tensor([position - 1 for position, _token in pairs], device=device)
            logps = torch.log_softmax(causal_lm.lm_head(hidden[row, positions]).float(), dim=-1)
            results.append([float(logps[i, token]) for i, (_position, token) in enumerate(pairs)])
    return results


def choose_policy_rejected(rows: list[dict], snapshot: FeedbackSnapshot, model: Any, tokenizer: Any, *,
                           batch_size: int = 8) -> tuple[list[dict], Counter]:
    """`rows` (the formatter's training pairs) with each rated pair's rejected answer replaced by the down-rated pick
    `model` finds likeliest; correction pairs (the rater named the chosen pick for that rejected one) stay. Returns the
    rows and counts of what changed, by kind."""
    downs = down_rated_by_scenario(snapshot)
    prepared: list[tuple[int, tuple[int, ...], list[_Candidate]]] = []
    for index, row in enumerate(rows):
        if row.get("origin") != "ratings":
            continue
        sequence, candidates = _candidates(row, downs.get(row["scenario_id"], []), snapshot, tokenizer)
        if len(candidates) > 1:
            prepared.append((index, sequence, candidates))
    # A question's widget and fixture pairs often share their chosen answer: each distinct sequence runs once.
    wanted: dict[tuple[int, ...], set[tuple[int, int]]] = defaultdict(set)
    for _index, sequence, candidates in prepared:
        wanted[sequence].update((c.position, c.token) for c in candidates)
    sequences = sorted(wanted, key=len)
    scores: dict[tuple[tuple[int, ...], int, int], float] = {}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in tqdm(range(0, len(sequences), batch_size), desc="On-policy rejected answers", leave=False, disable=None):
        batch = sequences[start : start + batch_size]
        targets = [sorted(wanted[sequence]) for sequence in batch]
        for sequence, pairs, logps in zip(batch, targets, _token_logps(model, batch, targets, pad_id)):
            scores.update({(sequence, position, token): logp for (position, token), logp in zip(pairs, logps)})
    chosen_rejected = {
        index: max(candidates, key=lambda c: scores[(sequence, c.position, c.token)]).pick
        for index, sequence, candidates in prepared
    }
    changed: Counter = Counter()
    result = []
    for index, row in enumerate(rows):
        pick = chosen_rejected.get(index)
        if pick is None:
            result.append(row)
            continue
        rejected = assistant_message(pick, snapshot.scenarios[row["scenario_id"]], snapshot.catalog)
        if not pick.same_choice(parse_pick(row["rejected"][0]["content"], snapshot.catalog)):
            changed[row["kind"]] += 1
        result.append({**row, "rejected": rejected})
    return result, changed


def apply_policy_negatives(prepared: PreparedDataset, config: TrainingConfig, tokenizer: Any) -> None:
    """Re-choose the rejected answers of `prepared`'s training pairs by `config.init_adapter` (`choose_policy_rejected`);
    the held-out pairs stay as the formatter made them, so held-out preference accuracy stays comparable."""
    import gc

    from datasets import Dataset

    from rl.evaluation.backends import evaluation_model

    model = evaluation_model(config.base_model or None, config.init_adapter)
    rows, changed = choose_policy_rejected(prepared.dataset["train"].to_list(), prepared.snapshot, model, tokenizer)
    del model
    gc.collect()
    prepared.dataset["train"] = Dataset.from_list(rows)
    prepared.stats.policy_rejected = dict(changed)
    logger.info("On-policy rejected answers (policy_negatives): %d of %d training pairs now reject %s's likeliest "
                "wrong pick instead of the formatter's (%s)", sum(changed.values()), len(rows), config.init_adapter,
                ", ".join(f"{kind} {count}" for kind, count in sorted(changed.items())) or "none changed")
