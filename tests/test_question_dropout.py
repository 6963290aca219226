import re

import pytest

from rl.core.config import ConfigError, training_config
from rl.data.question_dropout import MIN_WORDS_KEPT, drop_question_words

QUERY = "Show me the supply air temperature on AHU-3 over the last 24 hours please"


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    words = iter(long)
    return all(word in words for word in short)


def test_a_question_loses_about_its_share_of_words_in_order_and_the_same_ones_for_the_same_key():
    cuts = [drop_question_words(QUERY, 0.3, f"s{i:03d}") for i in range(200)]
    assert cuts[7] == drop_question_words(QUERY, 0.3, "s007")
    assert len(set(cuts)) > 20
    for cut in cuts:
        assert _is_subsequence(cut.split(), QUERY.split()) and len(cut.split()) >= MIN_WORDS_KEPT
    dropped = sum(len(QUERY.split()) - len(cut.split()) for cut in cuts) / (200 * len(QUERY.split()))
    assert 0.2 < dropped < 0.4
    assert drop_question_words(QUERY, 0.0, "s001") == QUERY


def test_a_question_that_would_keep_too_few_words_is_left_whole():
    assert drop_question_words("chiller 3 power", 0.99, "s001") == "chiller 3 power"


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_a_dropout_share_outside_0_to_1_is_refused(share):
    with pytest.raises(ConfigError, match="question_word_dropout"):
        training_config("cpu", question_word_dropout=share)


def _questions(prompt: list[dict]) -> list[str]:
    return re.findall(r"^Question: (.*)$", prompt[-1]["content"], re.M)


def _fixture_lines(prompt: list[dict]) -> list[str]:
    after_heading = prompt[-1]["content"].split("\nFixtures:\n")[1]
    return [line for line in after_heading.splitlines() if line.startswith("- ")]


def test_training_prompts_ask_a_cut_question_with_the_whole_question_s_shortlist_and_held_out_prompts_are_whole(demo_db):
    from rl.data.dataset_builder import prepare_training_dataset

    whole = prepare_training_dataset("db", min_samples=10)
    cut = prepare_training_dataset("db", min_samples=10, question_word_dropout=0.3)
    assert cut.dataset["eval"].to_list() == whole.dataset["eval"].to_list()
    assert len(cut.dataset["train"]) == len(whole.dataset["train"])
    changed = 0
    for before, after in zip(whole.dataset["train"], cut.dataset["train"]):
        assert (after["chosen"], after["rejected"], after["scenario_id"]) == (before["chosen"], before["rejected"], before["scenario_id"])
        (asked, again), (original, _) = _questions(after["prompt"]), _questions(before["prompt"])
        assert asked == again and _is_subsequence(asked.split(), original.split())
        assert _fixture_lines(after["prompt"]) == _fixture_lines(before["prompt"])
        changed += asked != original
    assert changed > len(cut.dataset["train"]) / 2
    kto_before, kto_after = whole.kto_dataset["train"], cut.kto_dataset["train"]
    assert [r["completion"] for r in kto_after] == [r["completion"] for r in kto_before]
    assert sum(_questions(a["prompt"]) != _questions(b["prompt"]) for a, b in zip(kto_after, kto_before)) > len(kto_after) / 2
