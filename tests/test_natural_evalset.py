"""The natural-question set is kept apart from the demo generator and stays in sync with its hand-written source."""
import json
import re

from feedback.demo import PHRASINGS, build_demo
from feedback.files import read_data_file, read_ratings_file
from rl.data.evalsets import NATURAL_DATA_FILE, NATURAL_RATINGS_FILE, build_natural_evalset, load_questions

# Measured when the set was written: 1.5% of its word 4-grams occur in some generated demo question (mostly fixture
# names such as "data hall 1 humidity"), 0.15% in the phrasing templates. The bound leaves room for a few edits.
MAX_SHARED_4GRAMS = 0.03


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _grams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_it_has_at_least_80_questions_each_with_its_right_widgets_and_fixtures():
    questions = load_questions()["questions"]
    assert len(questions) >= 80
    assert all(q["widgets"] and q["fixtures"] for q in questions)
    assert len({q["query"].lower() for q in questions}) == len(questions)


def test_the_committed_files_are_what_the_questions_build():
    data, ratings = build_natural_evalset()
    assert read_data_file(NATURAL_DATA_FILE) == data
    assert read_ratings_file(NATURAL_RATINGS_FILE) == ratings


def test_none_of_its_questions_is_in_the_training_data():
    training = {s.query.lower() for s in build_demo()[0].scenarios}
    assert not {q["query"].lower() for q in load_questions()["questions"]} & training


def test_it_shares_few_word_4grams_with_the_generator():
    generated = set().union(*(_grams(s.query) for s in build_demo()[0].scenarios))
    templates = set().union(*(_grams(p) for phrasings in PHRASINGS.values() for p in phrasings))
    questions = [q["query"] for q in load_questions()["questions"]]
    total = sum(len(_grams(q)) for q in questions)
    assert sum(len(_grams(q) & generated) for q in questions) / total <= MAX_SHARED_4GRAMS
    assert sum(len(_grams(q) & templates) for q in questions) / total <= MAX_SHARED_4GRAMS


def test_its_catalog_includes_fixtures_the_training_data_never_uses():
    data, _ = build_demo()
    used_in_training = {slug for e in data.entries for slug in e.fixtures} | {f.slug for f in data.fixtures}
    natural = read_data_file(NATURAL_DATA_FILE)
    unseen = {f.slug for f in natural.fixtures} - used_in_training
    asked_about = {slug for q in load_questions()["questions"] for slug in q["fixtures"]}
    assert len(unseen & asked_about) >= 10
    assert json.loads(NATURAL_RATINGS_FILE.read_text())["raters"][0]["simulated"] is False
