"""Evaluation sets: held-out pairs and scenarios, tokenized once with the chat template, for every backend."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from rl.core.prompts import Catalog, Pick


class EvaluationError(ValueError):
    pass


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]


@dataclass(frozen=True)
class GenerationCase:
    scenario_id: str
    prompt_ids: tuple[int, ...]
    expected: tuple[Pick, ...]  # every up-rated pick of the scenario
    # The JSON schema constrained answers are decoded under: a valid answer to this prompt, ending with its decision
    # (`decision_schema`: below the answer-token limit the grammar completes every answer, and no metric reads a title).
    schema: dict[str, Any] | None = None


@dataclass
class EvalSet:
    pairs: list[TokenizedPair]
    cases: list[GenerationCase]
    catalog: Catalog
    description: dict[str, Any] = field(default_factory=dict)


def answer_ids(tokenizer: Any, prompt: list[dict], answer: list[dict], prompt_ids: list[int]) -> tuple[int, ...]:
    full = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]
    if full[: len(prompt_ids)] != prompt_ids:
        raise EvaluationError("The chat template does not extend the prompt with the answer; cannot score answers.")
    return tuple(full[len(prompt_ids):])


def tokenize_prompt(tokenizer: Any, prompt: list[dict]) -> list[int]:
    return list(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])


def tokenize_pairs(pair_rows: list[dict], tokenizer: Any) -> list[TokenizedPair]:
    """Pairs as the trainer's rows hold them (prompt, chosen and rejected messages), tokenized with the chat template."""
    pairs = []
    for row in pair_rows:
        prompt_ids = tokenize_prompt(tokenizer, row["prompt"])
        pairs.append(TokenizedPair(
            tuple(prompt_ids), answer_ids(tokenizer, row["prompt"], row["chosen"], prompt_ids),
            answer_ids(tokenizer, row["prompt"], row["rejected"], prompt_ids),
        ))
    return pairs


def right_picks(snapshot: Any, scenario_ids: set[str]) -> dict[str, list[Pick]]:
    """The up-rated picks (by the formatter's verdicts) of each of `scenario_ids` that has one: what an answer is
    scored against."""
    from rl.data.data_formatter import entry_verdicts

    verdicts = entry_verdicts(snapshot.entries)
    ups: dict[str, list[Pick]] = defaultdict(list)
    for entry in snapshot.entries:
        if entry.scenario_id in scenario_ids and verdicts.get(entry.entry_id) == "up":
            ups[entry.scenario_id].append(entry.pick)
    return ups


def build_eval_set(pair_rows: list[dict], snapshot: Any, scenario_ids: set[str], tokenizer: Any, limit: int | None = None) -> EvalSet:
    """Tokenize held-out pairs and the generation cases of `scenario_ids` (scenarios with an up-rated pick)."""
    from rl.core.prompts import answer_schema, build_messages, decision_schema

    pairs = tokenize_pairs(pair_rows[: limit or None], tokenizer)
    ups = right_picks(snapshot, scenario_ids)
    cases = [
        GenerationCase(sid, tuple(tokenize_prompt(tokenizer, build_messages(snapshot.scenarios[sid], snapshot.catalog))), tuple(picks),
                       decision_schema(answer_schema(snapshot.scenarios[sid], snapshot.catalog)))
        for sid, picks in sorted(ups.items())
    ][: limit or None]
    if not pairs and not cases:
        raise EvaluationError("The evaluation set is empty: no held-out pairs and no held-out scenario with an up-rated pick.")
    return EvalSet(pairs, cases, snapshot.catalog)
