"""How an evaluation's answers stand against the fixture retriever (docs/training-recipe.md, rounds nine and ten).

The prompt offers BM25's shortlist, best match first, and an answer writes its fixtures in that order, so a model can
follow the retriever (name its first k fixtures) or overrule it. Each answer is set against the retriever's top k,
k the number of fixtures a right pick shows: right where the retriever is right, right where it is wrong (a right
overrule), wrong where it is right, wrong where it is too. Where the answer left the shortlist's order, whether that
was right or wrong says what the model's own reading of the fixtures is worth on that set.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rl.core.prompts import Catalog, Pick, ScenarioText


@dataclass
class RetrieverAgreement:
    both_right: int = 0
    answer_right_retriever_wrong: int = 0
    answer_wrong_retriever_right: int = 0
    both_wrong: int = 0
    left_order_rightly: int = 0  # the answer's fixtures are not the shortlist's first ones, and they are right
    left_order_wrongly: int = 0  # ... and they are wrong while the retriever's top k was right

    @property
    def answers(self) -> int:
        return self.both_right + self.answer_right_retriever_wrong + self.answer_wrong_retriever_right + self.both_wrong

    @property
    def retriever_accuracy(self) -> float:
        """The share of questions the retriever's top k answers: the bound of a model that always follows it."""
        return (self.both_right + self.answer_wrong_retriever_right) / self.answers if self.answers else 0.0

    def rows(self) -> list[tuple[str, int]]:
        return [
            ("answer right, retriever's top k right", self.both_right),
            ("answer right, retriever's top k wrong (a right overrule)", self.answer_right_retriever_wrong),
            ("answer wrong, retriever's top k right", self.answer_wrong_retriever_right),
            ("both wrong", self.both_wrong),
            ("left the shortlist's order, rightly", self.left_order_rightly),
            ("left the shortlist's order, wrongly (the top k was right)", self.left_order_wrongly),
        ]


def retriever_agreement(answers: Sequence[Mapping[str, str]], right: Mapping[str, Sequence[Pick]], catalog: Catalog,
                        scenarios: Mapping[str, ScenarioText]) -> RetrieverAgreement:
    """Count `answers` (an evaluation file's `{"scenario_id", "answer"}` rows) against the retriever's top k, by the
    `right` picks of each scenario. An answer that is not a JSON object with fixtures counts as wrong, in its order."""
    agreement = RetrieverAgreement()
    for row in answers:
        shortlist = catalog.shortlist_for(scenarios[row["scenario_id"]])
        picks = right[row["scenario_id"]]
        try:
            fixtures = set(json.loads(row["answer"])["fixtures"])
        except (ValueError, KeyError, TypeError):
            fixtures = set()
        answer_right = any(fixtures == set(p.fixtures) for p in picks)
        retriever_right = any(set(shortlist[: len(p.fixtures)]) == set(p.fixtures) for p in picks)
        if answer_right and retriever_right:
            agreement.both_right += 1
        elif answer_right:
            agreement.answer_right_retriever_wrong += 1
        elif retriever_right:
            agreement.answer_wrong_retriever_right += 1
        else:
            agreement.both_wrong += 1
        if fixtures and fixtures != set(shortlist[: len(fixtures)]):
            agreement.left_order_rightly += answer_right
            agreement.left_order_wrongly += not answer_right and retriever_right
    return agreement
