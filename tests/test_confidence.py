"""A pick's confidence from the engine's token log-probabilities."""
import math

import pytest

from rl.serving.confidence import widget_probability

ANSWER = '{"widget": "kpi_card", "fixtures": ["ahu_2_status"]}'
TOKENS = [('{"', -0.1), ("widget", -0.1), ('":', -0.1), (' "', -0.2), ("k", -0.5), ("pi", -0.25), ("_card", -0.05), ('",', -0.3),
          (' "fixtures": ["ahu_2_status"]}', -1.0)]


def test_the_widget_s_probability_is_the_product_over_the_tokens_that_spell_it():
    assert widget_probability(ANSWER, TOKENS) == pytest.approx(math.exp(-0.8))


def test_a_token_that_straddles_the_value_s_edge_counts():
    tokens = [('{"widget": "k', -0.7), ("pi_card", -0.1), ('", "fixtures": ["ahu_2_status"]}', -2.0)]
    assert widget_probability(ANSWER, tokens) == pytest.approx(math.exp(-0.8))


@pytest.mark.parametrize("answer, tokens", [
    (ANSWER, TOKENS[:-1]),  # the tokens do not spell the whole answer
    ('{"fixtures": []}', [('{"fixtures": []}', -0.1)]),  # no widget
    ('{"widget": "kpi', [('{"widget": "kpi', -0.1)]),  # cut off: not JSON
])
def test_no_confidence_when_the_tokens_cannot_be_read(answer, tokens):
    assert widget_probability(answer, tokens) is None
