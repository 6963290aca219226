"""The natural-question set is kept apart from the demo generator and stays in sync with its hand-written source; its
two parts (gate and sealed) are split by question and written apart from each other."""
import json
import re
from pathlib import Path

import pytest

from feedback.demo import PHRASINGS, build_demo
from feedback.files import read_data_file, read_ratings_file
from rl.data.evalsets import (
    DATA_FILE,
    NATURAL_DIR,
    QUESTIONS_FILE,
    RATINGS_FILE,
    build_natural_evalset,
    load_questions,
)
from rl.data.sealed import SEALED_DIR

# Measured when the parts were written: 1.5% (gate) and 1.3% (sealed) of their word 4-grams occur in some generated
# demo question (mostly fixture names such as "data hall 1 humidity"), 0.15% and 0.85% in the phrasing templates; the
# sealed part shares 1.9% with the gate part. The bound leaves room for a few edits.
MAX_SHARED_4GRAMS = 0.03
PARTS = pytest.mark.parametrize("part", [NATURAL_DIR, SEALED_DIR], ids=["gate", "sealed"])


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _grams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _questions(part: Path) -> list[dict]:
    return load_questions(part / QUESTIONS_FILE)["questions"]


def test_it_has_at_least_200_questions_split_by_question_into_its_two_parts():
    gate, sealed = _questions(NATURAL_DIR), _questions(SEALED_DIR)
    assert len(gate) + len(sealed) >= 200 and len(gate) >= 80 and len(sealed) >= 100
    everything = gate + sealed
    assert all(q["widgets"] and q["fixtures"] for q in everything)
    assert len({q["query"].lower() for q in everything}) == len(everything)  # no question in both parts
    assert len({q["id"] for q in everything}) == len(everything)


@PARTS
def test_the_committed_files_are_what_the_questions_build(part):
    data, ratings = build_natural_evalset(load_questions(part / QUESTIONS_FILE))
    assert read_data_file(part / DATA_FILE) == data
    assert read_ratings_file(part / RATINGS_FILE) == ratings


@PARTS
def test_every_answer_names_fixtures_of_the_question_s_own_site(part):
    data = read_data_file(part / DATA_FILE)
    sites = {f.slug: set(f.sites) for f in data.fixtures}
    assert all(q["site"] in sites[slug] for q in _questions(part) for slug in q["fixtures"])


@PARTS
def test_none_of_its_questions_is_in_the_training_data(part):
    training = {s.query.lower() for s in build_demo()[0].scenarios}
    assert not {q["query"].lower() for q in _questions(part)} & training


@PARTS
def test_it_shares_few_word_4grams_with_the_generator(part):
    generated = set().union(*(_grams(s.query) for s in build_demo()[0].scenarios))
    templates = set().union(*(_grams(p) for phrasings in PHRASINGS.values() for p in phrasings))
    questions = [q["query"] for q in _questions(part)]
    total = sum(len(_grams(q)) for q in questions)
    assert sum(len(_grams(q) & generated) for q in questions) / total <= MAX_SHARED_4GRAMS
    assert sum(len(_grams(q) & templates) for q in questions) / total <= MAX_SHARED_4GRAMS


def test_the_sealed_part_was_written_apart_from_the_gate_part():
    gate = set().union(*(_grams(q["query"]) for q in _questions(NATURAL_DIR)))
    sealed = [q["query"] for q in _questions(SEALED_DIR)]
    assert sum(len(_grams(q) & gate) for q in sealed) / sum(len(_grams(q)) for q in sealed) <= MAX_SHARED_4GRAMS


@PARTS
def test_its_catalog_includes_fixtures_the_training_data_never_uses(part):
    data, _ = build_demo()
    used_in_training = {slug for e in data.entries for slug in e.fixtures} | {f.slug for f in data.fixtures}
    natural = read_data_file(part / DATA_FILE)
    unseen = {f.slug for f in natural.fixtures} - used_in_training
    asked_about = {slug for q in _questions(part) for slug in q["fixtures"]}
    assert len(unseen & asked_about) >= 10
    assert json.loads((part / RATINGS_FILE).read_text())["raters"][0]["simulated"] is False


def test_the_sealed_part_asks_about_a_site_no_other_data_has():
    training_sites = {s.site for s in build_demo()[0].scenarios}
    gate_sites = {q["site"] for q in _questions(NATURAL_DIR)}
    sealed_sites = {q["site"] for q in _questions(SEALED_DIR)}
    assert sealed_sites - training_sites - gate_sites
