"""A pick's confidence: the probability the engine gave the tokens of the chosen widget's name."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence

_WIDGET_VALUE = re.compile(r'"widget"\s*:\s*"')


def widget_probability(answer: str, tokens: Sequence[tuple[str, float]]) -> float | None:
    """exp(sum of the log-probs of the tokens that spell the answer's widget value), from the engine's (token text,
    log-prob) list for `answer`; None when the tokens do not spell the answer or the answer names no widget.

    A token that straddles the value's edge (`"kpi` or `_card"`) counts: the value cannot be told apart from it."""
    if "".join(text for text, _ in tokens) != answer:
        return None
    match = _WIDGET_VALUE.search(answer)
    if match is None:
        return None
    try:
        widget = json.loads(answer).get("widget")
    except (ValueError, AttributeError):
        return None
    if not isinstance(widget, str) or not answer.startswith(widget, match.end()):
        return None
    start, end = match.end(), match.end() + len(widget)
    position, total = 0, 0.0
    for text, logprob in tokens:
        token_start, position = position, position + len(text)
        if position > start and token_start < end:
            total += logprob
    return math.exp(total)
